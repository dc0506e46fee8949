"""core/ never depends on tui/, textual or rich, and the fast commands import nothing heavy.

Checked in the sources (every import, those inside functions too) and in fresh interpreters,
because within pytest everything is already imported.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import _cli_env, kill_tree, run_cli, start_cli, write_recipe

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("textual", "dash", "plotly", "tui.app")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_sources_never_import_tui_textual_or_rich():
    """Presentation lives in tui/ (the app, the headless reporter, tui.format): core/ is the run
    alone, for every front end, a daemon with no terminal included."""
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        for name in _imports(path):  # ast.walk: lazy imports inside functions too
            if name.split(".")[0] in ("tui", "textual", "rich"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_importing_the_whole_core_loads_no_ui():
    modules = _loaded_after(
        "import core.runner, core.recipe, core.sessions.screen, core.sessions.tmux"
    )
    assert not {m for m in modules if m.split(".")[0] in ("textual", "tui", "rich")}


def test_version_and_validate_do_not_import_heavy_modules():
    for code in (
        "import sys; sys.argv=['orch-tui','--version']\nfrom tui.cli import main\n"
        "try: main()\nexcept SystemExit: pass",
        "from tui.cli import main; main(['validate', 'recipes/example_parallel.yaml'])",
    ):
        modules = _loaded_after(code)
        assert not {m for m in modules if m.split(".")[0] in ("textual", "dash", "plotly")}
        assert "tui.app" not in modules


ONE_STEP = """
name: one
steps:
  - {name: hello, type: shell, run: "echo hello"}
"""


def _imported_by(args: list[str], cwd: Path) -> tuple[set[str], str]:
    """The modules a real ``orch-tui ARGS`` imports (Python's own import log on stderr:
    ``PYTHONPROFILEIMPORTTIME``) with its stdout a file, as in a CI job; and that stdout."""
    out_path = cwd / "stdout.txt"
    with open(out_path, "wb") as out:
        proc = start_cli(*args, cwd=cwd, env={"PYTHONPROFILEIMPORTTIME": "1"}, stdout=out)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            kill_tree(proc)
    assert proc.returncode == 0, err.decode()
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in err.decode().splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "tui.cli" in modules  # the log is there: an empty set would prove nothing
    return modules, out_path.read_text()


def test_version_and_a_run_off_a_terminal_import_neither_textual_nor_rich(tmp_path: Path):
    """A CI log has no terminal: the headless reporter prints plain lines (and its summary
    table) without Rich, a tenth of a second of start-up saved on every run."""
    modules, out = _imported_by(["--version"], tmp_path)
    assert not {m for m in modules if m.split(".")[0] in ("textual", "rich")}
    recipe = write_recipe(tmp_path, ONE_STEP)
    modules, out = _imported_by([str(recipe), "--no-ui"], tmp_path)
    assert not {m for m in modules if m.split(".")[0] in ("textual", "rich")}
    assert not {m for m in modules if m.split(".")[0] in ("distributed", "dask")}  # no executor
    assert "hello | hello" in out and "run succeeded: 1 succeeded" in out
    assert re.search(r"^step +status +duration", out, re.M)  # the summary table, drawn plain


def test_psutil_is_imported_by_the_first_sample_not_at_start(tmp_path: Path):
    """Resource sampling imports psutil when it first samples a shell step's process tree
    (the system's and python steps' figures come from /proc): a run that samples nothing
    (here every step skipped; in practice steps that end before the first tick) does not pay
    for it at start-up. The run still ends as a run should."""
    recipe = write_recipe(tmp_path, ONE_STEP)
    modules, out = _imported_by([str(recipe), "--no-ui", "--skip", "hello"], tmp_path)
    assert "psutil" not in modules
    assert "run succeeded" in out and "1 skipped" in out


def test_a_quiet_one_step_run_imports_no_logging_socket_or_shutil(tmp_path: Path):
    """core's loggers import ``logging`` at their first message (core.log), health checks and
    port readiness ``socket`` when they check, and the command line's parser asks no shutil for
    the terminal's width: a one-step run that logs nothing and checks no port does without
    them (with traceback, string, bz2 and lzma, ~12 ms of its start-up)."""
    recipe = write_recipe(tmp_path, ONE_STEP)
    modules, out = _imported_by([str(recipe), "--no-ui"], tmp_path)
    assert "run succeeded: 1 succeeded" in out
    assert {"logging", "socket", "shutil"} & modules == set()


def _loaded_after_a_run(
    tmp_path: Path, recipe: Path, names: tuple[str, ...], then: str = ""
) -> str:
    """Run ``orch-tui RECIPE --no-ui`` in a fresh interpreter and print which of ``names`` are
    in sys.modules at its end (not -X importtime's log, which lists a refused import too),
    then run ``then``: the process's stdout."""
    code = (
        "import sys\nsys.argv = ['orch-tui', *sys.argv[1:]]\nfrom tui.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('loaded:', [name for name in {names!r} if sys.modules.get(name)])\n{then}"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(recipe), "--no-ui"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_cli_env(None),
        timeout=60,
    )
    assert "run succeeded: 1 succeeded" in proc.stdout, proc.stderr
    return proc.stdout


def test_a_shell_step_run_imports_no_typing_extensions_inspect_or_orjson(tmp_path: Path):
    """msgspec is imported without typing_extensions (core/__init__.py), the ctx is written
    with msgspec rather than orjson (which brings dataclasses), and python steps' signatures
    are read with an ``inspect`` imported only when there are some: a run of shell steps
    imports none of them (~10 ms of its start-up). Its ctx.json is still written."""
    recipe = write_recipe(tmp_path, ONE_STEP + "ctx: {greeting: héllo, n: 18446744073709551615}\n")
    names = ("typing_extensions", "inspect", "orjson", "dataclasses")
    out = _loaded_after_a_run(tmp_path, recipe, names)
    assert out.endswith("loaded: []\n"), out
    (ctx_json,) = tmp_path.glob("**/ctx.json")
    assert json.loads(ctx_json.read_text()) == {"greeting": "héllo", "n": 18446744073709551615}


def test_a_shell_step_run_imports_neither_platform_nor_json(tmp_path: Path):
    """uuid (msgspec's) is imported with a stand-in for platform (core/__init__.py), and json
    only where a file is read back or a ctx value exposed: a run of shell steps loads neither
    (~5 ms of its start). platform imported later is the real module, and uuid works."""
    recipe = write_recipe(tmp_path, ONE_STEP)
    then = (
        "import platform, uuid\n"
        "print(platform.python_implementation(), uuid.UUID(str(uuid.uuid4())).version)\n"
    )
    out = _loaded_after_a_run(tmp_path, recipe, ("platform", "json"), then)
    assert out.endswith("loaded: []\nCPython 4\n"), out


def test_msgspec_imported_without_typing_extensions_still_decodes_our_types():
    """What msgspec took from typing_extensions, Python's typing has: the run state and the
    events still round-trip, and a later ``import typing_extensions`` (Textual's) works."""
    code = (
        "import core, sys\n"
        "assert 'typing_extensions' not in sys.modules\n"
        "from core.events import StepFinished, decode_event, encode_event\n"
        "from core.state import StepState\n"
        "state = StepState(name='a', type='shell', index=0)\n"
        "e = StepFinished(step='a', state=state, status='failed', attempt=1, exit_code=3)\n"
        "e.seq = 7\n"
        "back = decode_event(encode_event(e))\n"
        "assert (back.step, back.exit_code, back.seq) == ('a', 3, 7), back\n"
        "import typing_extensions\n"
        "print(typing_extensions.__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "typing_extensions\n"), proc.stderr


def test_a_quiet_runs_first_warning_reads_as_the_runs_messages():
    """The set-up of a quiet run's logging waits for its first message, which reads as the
    run's own messages do (``12:00:02 ⚠ warning: ...``, on stderr); --debug's messages are on
    at once, each with its level and logger."""
    code = (
        "import sys\nfrom tui.cli import _setup_logging\nfrom core.log import get_logger\n"
        "_setup_logging(sys.argv[1] == 'debug')\nlog = get_logger('orch.store')\n"
        "print('logging' in sys.modules)\nlog.debug('seq %d', 1)\nlog.warning('disk %s', 'full')"
    )
    for mode, imported, err in (
        ("quiet", "False", r"\d\d:\d\d:\d\d (⚠|!) warning: disk full\n"),
        (
            "debug",
            "True",
            "orch-tui DEBUG orch.store: seq 1\norch-tui WARNING orch.store: disk full\n",
        ),
    ):
        proc = subprocess.run(
            [sys.executable, "-c", code, mode], cwd=ROOT, capture_output=True, text=True
        )
        assert (proc.returncode, proc.stdout) == (0, f"{imported}\n"), proc.stderr
        assert re.fullmatch(err, proc.stderr), proc.stderr


def test_a_uuid_wanting_more_of_platform_than_system_still_imports(tmp_path: Path):
    """The stand-in for platform (core/__init__.py) has ``system()`` only: a uuid that wants
    more of it (another Python's) is imported with the real platform, and core imports."""
    import uuid

    source = Path(uuid.__file__).read_text()
    (tmp_path / "uuid.py").write_text(source + "\nMACHINE = platform.machine()\n")
    code = (
        f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport core, uuid, platform\n"
        "print(uuid.MACHINE == platform.machine(), 'platform' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "True True\n"), proc.stderr


def test_runs_and_ctl_status_import_no_headless_front_end(tmp_path: Path):
    """``runs`` and ``ctl status`` print plain tables, lined up by the columns a terminal
    draws: they ask tui.cells for a string's width, not the headless front end (its reporter,
    echo and summary), which they once loaded for it (~20 ms of each command)."""
    recipe = write_recipe(tmp_path, ONE_STEP)
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    for args, shown in ((["runs"], "recipe.yaml"), (["ctl", "status"], "hello")):
        modules, out = _imported_by(args, tmp_path)
        assert shown in out
        assert {m for m in modules if m.startswith("tui.headless")} == set(), args


def test_a_python_step_run_imports_no_ctypes(tmp_path: Path):
    """A python step that ignores its stop is interrupted through ctypes; one never
    interrupted (every step of a normal run) costs neither ctypes' import (~2.5 ms of a run's
    start) nor a call into the interpreter as it ends."""
    (tmp_path / "quiet_step.py").write_text("def run(ctx):\n    ctx['done'] = True\n")
    recipe = write_recipe(tmp_path, "steps:\n  - {name: hello, type: python, module: quiet_step}\n")
    out = _loaded_after_a_run(tmp_path, recipe, ("ctypes",))
    assert out.endswith("loaded: []\n"), out
