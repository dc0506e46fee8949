"""The cache of compiled recipes (core.recipe.cache): a re-run of an unchanged recipe is served
without reading its YAML, and says exactly what loading it from the YAML would say.

Each test has its own cache folder (XDG_CACHE_HOME) and loads in real child processes, the way
``orch-tui`` does: whether PyYAML got imported tells a hit from a miss.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from core.recipe.cache import MAX_ENTRIES, Entry
from tests.conftest import run_cli, write_module, write_recipe

_CHILD = """
import json, sys
import msgspec
from core.recipe import RecipeError, load_recipe
out = {}
try:
    recipe = load_recipe(sys.argv[1])
except RecipeError as exc:
    out["problems"] = [str(p) for p in exc.problems]
else:
    out["recipe"] = json.loads(msgspec.json.encode(recipe, enc_hook=str))
    out["warnings"] = [str(w) for w in recipe.warnings]
out["yaml"] = "yaml" in sys.modules
print(json.dumps(out))
"""


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "xdg"


def _env(cache: Path, **more: str) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(cache), "ORCH_TUI_NO_CACHE": "", **more}


def load(path: Path | str, cache: Path, cwd: Path | None = None, **env: str) -> dict:
    """Load the recipe in a new Python process: its outcome, and whether PyYAML was used."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        cwd=cwd or Path(path).parent,
        env={**os.environ, **_env(cache, **env)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


def entries(cache: Path) -> list[Path]:
    folder = cache / "orch-tui" / "recipes"
    return sorted(folder.iterdir()) if folder.exists() else []


def the_entry(cache: Path) -> Path:
    found = entries(cache)
    assert len(found) == 1, found
    return found[0]


_SHELL = """
    steps:
      - name: first
        type: shell
        cmd: /usr/bin/true
      - name: second
        type: shell
        cmd: /usr/bin/true
        depends_on: [first]
    """


def test_a_second_load_is_served_from_the_cache_without_yaml(tmp_path: Path, cache: Path) -> None:
    recipe = write_recipe(tmp_path, _SHELL)
    cold = load(recipe, cache)
    assert cold["yaml"] and "recipe" in cold
    warm = load(recipe, cache)
    assert not warm["yaml"]
    assert warm == {**cold, "yaml": False}
    entry = the_entry(cache)
    assert entry.stat().st_mode & 0o777 == 0o600
    assert entry.parent.stat().st_mode & 0o777 == 0o700


def test_an_edit_of_the_same_size_and_mtime_is_not_served_stale(
    tmp_path: Path, cache: Path
) -> None:
    """The key is the content: a change that keeps the size, with the mtime put back."""
    recipe = write_recipe(tmp_path, _SHELL)
    assert run_cli("validate", recipe, cwd=tmp_path, env=_env(cache)).returncode == 0
    before = recipe.stat()
    recipe.write_text(recipe.read_text().replace("[first]", "[frist]"))
    os.utime(recipe, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert recipe.stat().st_size == before.st_size
    result = run_cli("validate", recipe, cwd=tmp_path, env=_env(cache))
    assert result.returncode == 2
    assert "depends_on: unknown step 'frist' (did you mean 'first'?)" in result.stderr


def _cached_python_step(tmp_path: Path, cache: Path) -> tuple[str, Path]:
    """A recipe of one python step, ``work(ctx, n=1)`` called with ``n: 2``, loaded once
    (so it is in the cache): its module's name and the recipe."""
    module = write_module(tmp_path, "def work(ctx, n=1):\n    pass\n")
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - name: calc
            type: python
            module: {module}
            function: work
            params:
              n: 2
        """,
    )
    assert "recipe" in load(recipe, cache)
    return module, recipe


def test_a_python_function_removed_is_still_reported_on_a_cached_recipe(
    tmp_path: Path, cache: Path
) -> None:
    module, recipe = _cached_python_step(tmp_path, cache)
    (tmp_path / f"{module}.py").write_text("def other(ctx):\n    pass\n")
    warm = load(recipe, cache)
    cold = load(recipe, cache, ORCH_TUI_NO_CACHE="1")
    assert not warm["yaml"]
    assert warm["problems"] == cold["problems"]
    assert warm["problems"] == [
        f"recipe.yaml:5:15: step 'calc': module '{module}' has no function 'work'"
    ]


def test_a_param_the_function_no_longer_takes_is_located_on_a_cached_recipe(
    tmp_path: Path, cache: Path
) -> None:
    module, recipe = _cached_python_step(tmp_path, cache)
    (tmp_path / f"{module}.py").write_text("def work(ctx, count):\n    pass\n")
    warm = load(recipe, cache)
    assert not warm["yaml"]
    assert warm["problems"] == load(recipe, cache, ORCH_TUI_NO_CACHE="1")["problems"]
    assert (
        f"recipe.yaml:7:7: step 'calc': unknown param 'n' for {module}.work()"
        in (warm["problems"][0])
    )


def test_a_cmd_gone_from_path_is_still_reported_on_a_cached_recipe(
    tmp_path: Path, cache: Path
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    shutil.copy("/usr/bin/true", tools / "mytool")
    recipe = write_recipe(
        tmp_path,
        f"""
        env:
          PATH: {tools}
        steps:
          - name: tool
            type: shell
            cmd: mytool
        """,
    )
    assert run_cli("validate", recipe, cwd=tmp_path, env=_env(cache)).returncode == 0
    (tools / "mytool").unlink()
    result = run_cli("validate", recipe, cwd=tmp_path, env=_env(cache))
    assert result.returncode == 2
    assert "recipe.yaml:6:10: step 'tool': cmd: mytool not found on PATH" in result.stderr
    assert not load(recipe, cache)["yaml"]  # it was a hit (and the entry still there)


def test_warnings_are_the_same_on_a_hit_wherever_it_is_run_from(
    tmp_path: Path, cache: Path
) -> None:
    """Warnings found from the bytes (two unordered steps set one output) and from this
    machine (a cmd an earlier step may build), naming the file as each command gave it."""
    module = write_module(tmp_path, "def run(ctx):\n    pass\n")
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - name: a
            type: python
            module: {module}
            output: result
          - name: b
            type: python
            module: {module}
            output: result
            depends_on: []
          - name: c
            type: shell
            cmd: build/app
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cold = run_cli("validate", "recipe.yaml", cwd=tmp_path, env=_env(cache, ORCH_TUI_NO_CACHE="1"))
    assert cold.returncode == 0 and cold.stderr.count("orch-tui: warning:") == 2, cold.stderr
    for _ in range(2):  # the first one writes the entry, the second is served from it
        result = run_cli("validate", "recipe.yaml", cwd=tmp_path, env=_env(cache))
        assert (result.returncode, result.stdout, result.stderr) == (0, cold.stdout, cold.stderr)
    far = run_cli("validate", recipe, cwd=elsewhere, env=_env(cache))
    assert far.stderr == cold.stderr.replace("recipe.yaml:", f"{recipe}:")
    assert not load(recipe, cache, cwd=elsewhere)["yaml"]


def test_a_corrupt_or_truncated_entry_is_ignored_and_replaced(tmp_path: Path, cache: Path) -> None:
    recipe = write_recipe(tmp_path, _SHELL)
    cold = load(recipe, cache)
    entry = the_entry(cache)
    whole = entry.read_bytes()
    for broken in (whole[: len(whole) // 2], b"garbage", whole[:-1] + b"\xc1"):
        entry.write_bytes(broken)
        assert load(recipe, cache) == cold  # read from the YAML again...
        assert entry.read_bytes() == whole  # ...and the entry written anew
    assert not load(recipe, cache)["yaml"]


def _planted(entry: Path) -> None:
    """Rewrite the entry so that it runs something else: what another user would plant."""
    blob = entry.read_bytes()
    head = blob.index(b"\n") + 1
    decoded = msgspec.msgpack.decode(blob[head:], type=Entry, dec_hook=lambda t, o: Path(o))
    steps = tuple(msgspec.structs.replace(s, cmd="/usr/bin/false") for s in decoded.recipe.steps)
    decoded = msgspec.structs.replace(
        decoded, recipe=msgspec.structs.replace(decoded.recipe, steps=steps)
    )
    entry.write_bytes(blob[:head] + msgspec.msgpack.encode(decoded, enc_hook=str))


@pytest.mark.parametrize("how", ["mode 0666", "mode 0620", "another owner", "a symlink"])
def test_an_entry_someone_else_could_have_written_is_ignored(
    tmp_path: Path, cache: Path, how: str
) -> None:
    recipe = write_recipe(tmp_path, _SHELL)
    load(recipe, cache)
    entry = the_entry(cache)
    _planted(entry)
    mine = load(recipe, cache)  # control: the same planted entry, ours and 0600, is trusted
    assert not mine["yaml"] and mine["recipe"]["steps"][0]["cmd"] == "/usr/bin/false"
    planted = tmp_path / "planted"
    if how == "another owner":
        if os.geteuid() != 0:
            pytest.skip("giving a file to another user needs root")
        os.chown(entry, 4242, -1)
    elif how == "a symlink":
        entry.rename(planted)
        entry.symlink_to(planted)
    else:
        entry.chmod(int(how.split()[1], 8))
    kept = planted.read_bytes() if how == "a symlink" else None
    served = load(recipe, cache)
    assert served["yaml"]
    assert [s["cmd"] for s in served["recipe"]["steps"]] == ["/usr/bin/true"] * 2
    if kept is not None:  # the link was replaced by a new entry, never written through
        assert planted.read_bytes() == kept and not entry.is_symlink()


def test_a_cache_folder_others_may_write_to_is_not_used(tmp_path: Path, cache: Path) -> None:
    recipe = write_recipe(tmp_path, _SHELL)
    load(recipe, cache)
    (cache / "orch-tui").chmod(0o777)
    assert load(recipe, cache)["yaml"]
    assert load(recipe, cache)["yaml"]  # nor written


def test_the_cache_off_neither_reads_nor_writes(tmp_path: Path, cache: Path) -> None:
    recipe = write_recipe(tmp_path, _SHELL)
    assert load(recipe, cache, ORCH_TUI_NO_CACHE="1")["yaml"]
    assert entries(cache) == []
    load(recipe, cache)
    assert load(recipe, cache, ORCH_TUI_NO_CACHE="1")["yaml"]


def test_validate_makes_no_orch_folder_and_a_run_is_served_from_its_entry(
    tmp_path: Path, cache: Path
) -> None:
    recipe = write_recipe(tmp_path, _SHELL)
    assert run_cli("validate", recipe, cwd=tmp_path, env=_env(cache)).returncode == 0
    assert not (tmp_path / ".orch").exists()
    entry = the_entry(cache)
    written = entry.stat().st_mtime_ns
    result = run_cli(recipe, "--no-ui", cwd=tmp_path, env=_env(cache))
    assert result.returncode == 0, result.stderr
    assert entry.stat().st_mtime_ns == written  # a hit: not written again


def test_entries_are_bounded_the_oldest_written_go(tmp_path: Path, cache: Path) -> None:
    paths = [write_recipe(tmp_path, _SHELL, name=f"r{i}.yaml") for i in range(MAX_ENTRIES + 3)]
    child = "import sys\nfrom core.recipe import load_recipe\nfor p in sys.argv[1:]: load_recipe(p)"
    env = {**os.environ, **_env(cache)}

    def load_all(some: list[Path]) -> None:
        subprocess.run([sys.executable, "-c", child, *some], env=env, check=True, timeout=60)

    load_all(paths[:MAX_ENTRIES])
    for entry in entries(cache):  # written an hour ago
        os.utime(entry, (entry.stat().st_atime - 3600, entry.stat().st_mtime - 3600))
    load_all(paths[MAX_ENTRIES:])
    assert len(entries(cache)) == MAX_ENTRIES
    assert [load(p, cache)["yaml"] for p in paths[MAX_ENTRIES:]] == [False] * 3


def test_a_recipe_the_cache_cannot_hold_loads_from_its_yaml_each_time(
    tmp_path: Path, cache: Path
) -> None:
    """msgpack holds integers of 64 bits; ``jobs`` takes any positive one."""
    recipe = write_recipe(tmp_path, "jobs: 99999999999999999999999\n" + textwrap.dedent(_SHELL))
    for _ in range(2):
        result = run_cli("validate", recipe, cwd=tmp_path, env=_env(cache))
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert entries(cache) == []


def test_help_says_where_the_cache_is_and_how_to_turn_it_off(tmp_path: Path) -> None:
    """A user who wonders why an edit "is not seen", or who wants a cold run, finds both in
    ``--help`` (the README is not at hand in a CI log)."""
    result = run_cli("--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "$XDG_CACHE_HOME/orch-tui/recipes" in result.stdout
    assert "ORCH_TUI_NO_CACHE=1" in result.stdout
