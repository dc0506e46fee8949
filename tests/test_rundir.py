"""core.rundir: the one place that knows where a run's files are, and a real run agrees."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from core.rundir import RunDir, list_runs, runs_root
from core.state import RunState
from tests.conftest import ORCH, run_recipe, write_module, write_recipe


def test_a_run_writes_its_files_where_rundir_says(tmp_path):
    module = write_module(tmp_path, "def run(ctx):\n    print('hi')\n    ctx['k'] = 1\n")
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: build, type: shell, run: echo built}}
          - {{name: Build, type: shell, run: echo twice}}
          - {{name: .dotted, type: python, module: {module}}}
        """,
    )
    assert result.code == 0
    run_dir = RunDir(result.run_dir)
    state = RunState.from_json(run_dir.state.read_bytes())
    run_dir.name_logs(lambda: state.steps)  # as a reader does: from the run's own state
    for name, step in state.steps.items():
        assert run_dir.log_name(name) == step.log
        assert run_dir.log(name) == result.run_dir / step.log
        assert run_dir.log(name).is_file()
    assert run_dir.log("Build").name == "Build-2.log"  # the names fold to the same file name
    assert run_dir.log(".dotted").name == "dotted.log"  # not a hidden file
    assert run_dir.ctx.is_file() and run_dir.events.is_file()


def test_create_makes_every_folder_private_under_the_cwd(tmp_path):
    os.chmod(tmp_path, 0o755)
    run_dir = RunDir.create(None, tmp_path, "20260101-000000-0000")
    try:
        assert run_dir.path == runs_root(tmp_path) / "20260101-000000-0000"
        assert runs_root(tmp_path) == tmp_path / ".orch" / "runs"
        for folder in (tmp_path / ".orch", runs_root(tmp_path), run_dir.path, run_dir.logs):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        ctx_out = run_dir.new_ctx_out("step", 1)
        assert ctx_out.path.parent == run_dir.path / "ctx_out"
        assert stat.S_IMODE(ctx_out.path.parent.stat().st_mode) == 0o700
        assert not ctx_out.path.exists() and ctx_out.untouched()
    finally:
        run_dir.close()


def test_list_runs_passes_over_what_is_not_a_run_folder_of_ours(tmp_path):
    root = runs_root(tmp_path)
    for run_id in ("r1", "r2"):
        RunDir.create(None, tmp_path, run_id).close()
    (root / "a-file").write_text("not a run")
    (tmp_path / "elsewhere").mkdir()
    (root / "a-link").symlink_to(tmp_path / "elsewhere")
    seen = sorted(run_dir.path.name for run_dir in list_runs(root))
    assert seen == ["r1", "r2"]
    assert list(list_runs(tmp_path / "missing")) == []


def test_two_runs_that_take_the_same_id_get_a_folder_each(tmp_path):
    """A run's id is its start second and its pid's last 16 bits: runs started in the same
    second in containers (each orch-tui is pid 1 in its own PID namespace) on one workspace
    took the same id and wrote into the same folder, their logs mixed in one file."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare: runs orch-tui as pid 1 of a PID namespace")
    recipe = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'echo only me'}\n")
    argv = ["unshare", "--pid", "--fork", "--mount-proc", *ORCH, str(recipe), "--no-ui"]
    for _ in range(5):  # until both start within one second (the id's time part)
        runs = runs_root(tmp_path)
        before = set(runs.iterdir()) if runs.exists() else set()
        procs = [
            subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        results = [(proc.communicate(timeout=60), proc.returncode) for proc in procs]
        assert [code for _, code in results] == [0, 0], results
        made = sorted(set(runs.iterdir()) - before)
        if len({folder.name[:15] for folder in made}) == 1 or len(made) < 2:
            break
    assert len(made) == 2, made
    assert [(folder / "logs" / "a.log").read_text() for folder in made] == ["only me\n"] * 2
