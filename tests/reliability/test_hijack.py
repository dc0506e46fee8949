"""Another local user must not be able to hijack a run (issue 11).

Both sides are real: the attacker is a user made for the test (``useradd``, removed after it)
who acts through a forked child that drops to that user's ids, or ``setpriv`` for a process that
runs alongside; the victim is this test's root process running orch-tui. The shared folder is
made like /tmp (mode 1777: anyone may create in it, nobody may remove what is not theirs), so
what stops the attacker is orch-tui's own checks, not that folder. ``fs.protected_symlinks``
would hide some of these attacks in /tmp itself; a shared project folder has no such help.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PY, kill_tree, run_cli, screen_session_pids, start_cli, write_recipe

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes a second user")

SCRIPT = Path(__file__).resolve().parents[2] / "scriptlets" / "shell" / "screen_script.sh"
SECRET = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIVictimsOwnKey victim@host\n"


def _victims_file(tmp_path: Path) -> Path:
    """A file of the victim's the attacker wants written (their own authorized_keys)."""
    keys = tmp_path / "authorized_keys"
    keys.write_text(SECRET)
    return keys


# ------------------------------------------------------------------------------ run folders
def test_a_run_folder_another_user_prepared_is_refused(tmp_path, shared, attacker):
    """What the attacker won by swapping a new run folder for their own: the step's output
    appended to the victim's authorized_keys, their ctx value in the victim's ctx."""
    from core.recipe import load_recipe
    from core.runner import Runner

    keys = _victims_file(tmp_path)
    run_dir = shared / "run"

    def prepare() -> None:
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "logs" / "step.log").symlink_to(keys)
        (run_dir / "ctx_out").mkdir()
        (run_dir / "ctx_out" / "step.log.1.env").write_text("token=attacker\n")

    attacker.do(prepare)
    recipe = load_recipe(
        write_recipe(tmp_path, "steps:\n  - {name: step, type: shell, run: 'echo run output'}\n")
    )
    runner = refused = None
    try:
        runner = Runner(recipe, run_dir=run_dir)
    except OSError as exc:
        refused = str(exc)
    else:
        runner.run()
    assert keys.read_text() == SECRET, "the step's output went into the victim's file"
    assert runner is None or "token" not in runner.ctx, "the attacker's value reached the ctx"
    assert refused == f"{run_dir}: owned by user {attacker.name}, not by you"


def test_an_orch_folder_another_user_made_is_refused(tmp_path, shared, attacker):
    runs = shared / ".orch" / "runs"
    attacker.do(lambda: runs.mkdir(parents=True))
    recipe = write_recipe(tmp_path, "steps:\n  - {name: step, type: shell, run: 'touch ran'}\n")
    result = run_cli(recipe, "--no-ui", cwd=shared)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{shared / '.orch'}: owned by user {attacker.name}, not by you" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(runs.iterdir()) == [] and not (tmp_path / "ran").exists()


RACER = """
import os, sys
shared, bait, names = sys.argv[1], sys.argv[2], sys.argv[3:]
links = [(bait, f"{shared}/{n}/{sub}") for n in names for sub in ("logs", "ctx_out")]
links += [(f"{bait}/{n}.events", f"{shared}/{n}/events.jsonl") for n in names]
while True:
    for target, link in links:
        try:
            os.symlink(target, link)
        except OSError:
            pass
"""


def test_a_new_run_dir_is_never_open_to_others_even_under_umask_0(tmp_path, shared, attacker):
    """The attacker spins, trying to plant links in the run folder the moment it appears;
    before, it was 0777 until a chmod, and they won 9 times out of 10."""
    names = [f"new{i}" for i in range(3)]
    bait = shared / "bait"
    attacker.do(bait.mkdir)
    recipe = write_recipe(tmp_path, "steps:\n  - {name: step, type: shell, run: 'echo hello'}\n")
    racer = subprocess.Popen(
        attacker.argv(PY, "-S", "-I", "-c", RACER, str(shared), str(bait), *names),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for name in names:
            proc = start_cli(recipe, "--no-ui", "--run-dir", shared / name, cwd=tmp_path, umask=0)
            try:
                out, err = proc.communicate(timeout=30)
            finally:
                kill_tree(proc)
            assert proc.returncode == 0, out.decode() + err.decode()
    finally:
        kill_tree(racer)
    assert sorted(p.name for p in bait.iterdir()) == [], "the run wrote into the attacker's folder"
    for name in names:
        run_dir = shared / name
        assert (run_dir.stat().st_mode & 0o7777) == 0o700
        planted = [p for p in run_dir.rglob("*") if p.lstat().st_uid != 0 or p.is_symlink()]
        assert planted == []


# ------------------------------------------------------------------------------ session logs
def test_a_session_log_path_another_user_linked_is_refused(tmp_path, shared, attacker, screendir):
    keys = _victims_file(tmp_path)
    link = shared / "session.log"
    attacker.do(lambda: link.symlink_to(keys))
    from tests.conftest import run_recipe

    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - name: lab
            type: session
            action: create
            session: orchhijack
            log: {json.dumps(str(link))}
            command: echo session output
        """,
        timeout=30,
    )
    step = result.steps["lab"]
    assert step["status"] == "failed", step
    assert step["reason"] == f"{link}: is a symbolic link (not followed)"
    assert keys.read_text() == SECRET
    assert screen_session_pids(screendir, "orchhijack") == []


def test_a_session_log_file_of_another_user_is_refused(shared, attacker):
    from core.sessions.base import SessionError, prepare_log_path

    theirs = shared / "theirs.log"
    attacker.do(lambda: theirs.write_text(""))
    with pytest.raises(SessionError) as refused:
        prepare_log_path(theirs)
    assert str(refused.value) == f"{theirs}: owned by user {attacker.name}, not by you"


@pytest.mark.parametrize("planted", ["a link in the log folder", "the log folder"])
def test_screen_script_recreate_never_logs_through_a_planted_path(
    tmp_path, shared, attacker, screendir, planted
):
    keys = _victims_file(tmp_path)
    if planted == "the log folder":
        log_dir = shared / "logs"
        attacker.do(lambda: (log_dir.mkdir(), (log_dir / "orchhijack.log").symlink_to(keys)))
        why = f"log folder {log_dir}: owned by user {attacker.name}, not by you"
    else:
        log_dir = shared
        attacker.do(lambda: (log_dir / "orchhijack.log").symlink_to(keys))
        why = f"log file {log_dir / 'orchhijack.log'}: it is a symbolic link (not followed)"
    result = subprocess.run(
        ["bash", str(SCRIPT), "-r", "orchhijack"],
        capture_output=True,
        text=True,
        env={**os.environ, "SCREEN_LOG_DIR": str(log_dir)},
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"screen_script.sh: refusing {why}\n"
    assert screen_session_pids(screendir, "orchhijack") == []
    assert keys.read_text() == SECRET


# ------------------------------------------------------------------------------ clean
def _fake_run(folder: Path) -> Path:
    (folder / "logs").mkdir(parents=True)
    (folder / "state.json").write_text('{"status": "succeeded", "pid": 1}')
    return folder


def test_clean_never_touches_what_another_user_made(tmp_path, shared, attacker):
    """Verification of ``orch-tui clean``: in a shared folder, another user's .orch is left;
    in yours, another user's run folder is left, and a link to one too (never followed)."""
    attacker.do(lambda: _fake_run(shared / ".orch" / "runs" / "20200101-000000-0001"))
    (shared / "pyproject.toml").write_text("")  # even one of the victim's: the folder is open
    result = run_cli("clean", cwd=shared)
    assert result.returncode == 0, result.stderr
    assert "left alone .orch: not a folder of yours" in result.stdout
    assert "remove" not in result.stdout
    assert (shared / ".orch" / "runs" / "20200101-000000-0001" / "state.json").exists()

    write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'true'}\n")
    runs = tmp_path / ".orch" / "runs"
    mine = _fake_run(runs / "20200101-000000-0002")
    theirs = _fake_run(runs / "20200101-000000-0003")
    elsewhere = _fake_run(shared / "theirs")
    for path in (theirs, *theirs.rglob("*"), elsewhere, *elsewhere.rglob("*")):
        os.chown(path, attacker.uid, attacker.gid, follow_symlinks=False)
    (runs / "20200101-000000-0004").symlink_to(elsewhere)
    result = run_cli("clean", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"removed .orch/runs/{mine.name}" in result.stdout
    assert f"left alone .orch/runs/{theirs.name}: not a folder of yours" in result.stdout
    assert "left alone .orch/runs/20200101-000000-0004: a symlink to" in result.stdout
    assert not mine.exists() and (theirs / "state.json").exists()
    assert (elsewhere / "state.json").exists()


# ------------------------------------------------------------------------------ workspace
def _pwn(marker: Path) -> str:
    """Python that leaves ``marker`` behind if anyone ever imports it."""
    return f"open({str(marker)!r}, 'a').close()\n"


def test_a_workspace_planted_in_a_shared_parent_is_not_used(shared, attacker):
    pwned = shared / "pwned"
    mine = shared / "mine"
    mine.mkdir()
    recipe = mine / "recipe.yaml"
    recipe.write_text(
        "steps:\n  - name: init\n    type: python\n    params: {keys: [rows]}\n"
        "    module: scriptlets.python.steps.ctx_init\n"
    )

    def plant() -> None:
        (shared / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
        (shared / "scriptlets").mkdir()
        (shared / "scriptlets" / "__init__.py").write_text(_pwn(pwned))
        (shared / "psutil.py").write_text(_pwn(pwned))

    attacker.do(plant)
    for args in (["validate", recipe], [recipe, "--no-ui"]):
        result = run_cli(*args, cwd=mine)
        assert not pwned.exists(), f"orch-tui {args[0]} ran another user's code"
        assert result.returncode == 0, result.stdout + result.stderr


def test_python_steps_are_not_imported_from_a_folder_others_can_write(shared, attacker):
    pwned = shared / "pwned"
    recipe = shared / "recipe.yaml"
    recipe.write_text("steps:\n  - {name: init, type: python, module: helper}\n")
    attacker.do(lambda: (shared / "helper.py").write_text(_pwn(pwned) + "def run(ctx): pass\n"))
    for args in (["validate", recipe], [recipe, "--no-ui"]):
        result = run_cli(*args, cwd=shared)
        assert not pwned.exists(), f"orch-tui {args[0]} ran another user's code"
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.endswith(
            f"recipe.yaml:2:40: step 'init': python steps are not imported from the workspace "
            f"{shared}: it is writable by other users (mode 1777); "
            "keep the recipe in a folder of yours\n"
        ), result.stderr
