"""Runs under low limits (``ulimit -n``): one clear line, no hang, no traceback, nothing left."""

from __future__ import annotations

import resource
import subprocess

from tests.conftest import ORCH, _cli_env, kill_tree, marked, write_recipe

PARALLEL = "steps:\n" + "".join(
    f"  - {{name: s{i}, type: shell, depends_on: [], run: 'echo {i}; sleep 0.05'}}\n"
    for i in range(500)
)


def _run_limited(recipe, cwd, files: int, *args: str, timeout: float = 60):
    """``orch-tui RECIPE --no-ui ARGS`` with at most ``files`` descriptors open at once."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    proc = subprocess.Popen(
        [*ORCH, str(recipe), "--no-ui", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_cli_env(None),
        start_new_session=True,
        preexec_fn=limit,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_tree(proc)
    return proc.returncode, out.decode(), err.decode()


def test_too_few_descriptors_to_start_a_run_is_one_line_exit_2_and_no_folder_left(tmp_path):
    """``ulimit -n 16``: the run cannot even start its watchdog. It said ``internal error:
    OSError: [Errno 24] Too many open files``, exit 1, and left a run folder without a
    state.json behind (which neither ``runs`` nor ``clean`` take)."""
    recipe = write_recipe(tmp_path, PARALLEL)
    code, out, err = _run_limited(recipe, tmp_path, 16, "--jobs", "8")
    assert (code, out) == (2, ""), err
    assert err == (
        "orch-tui: cannot start the run: too many open files: this process may have 16 open at"
        " once (ulimit -n 16); raise it (ulimit -n 4096) or lower --jobs\n"
    )
    assert list((tmp_path / ".orch" / "runs").iterdir()) == []


def test_a_run_short_of_descriptors_ends_and_says_why_its_steps_failed(tmp_path):
    """``ulimit -n 24`` and ``--jobs 8``: steps that cannot get their pipes fail, naming it.
    The end of the run, looking in /proc for what the steps left, met EMFILE too: the
    scheduler's thread died (its error report could not even import ``logging``), with a
    traceback, and the run hung for ever. Tried a few times: when /proc is short of a
    descriptor depends on which step's pipes are still open then."""
    recipe = write_recipe(tmp_path, PARALLEL)
    for _ in range(2):
        code, out, err = _run_limited(recipe, tmp_path, 24, "--jobs", "8", timeout=40)
        assert code == 1, out[-2000:] + err
        assert "Traceback" not in err and "Traceback" not in out, err
        assert "Too many open files" in out
        assert "run failed:" in out
    for run_dir in (tmp_path / ".orch" / "runs").iterdir():
        assert marked(run_dir) == []
