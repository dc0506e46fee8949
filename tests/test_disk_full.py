"""A run whose folder's disk fills up, and orch-tui's log lines as the user and the steps see
them."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.conftest import PY, run_cli, write_module, write_recipe

#: what ``seq 1 100000`` prints
SEQ_BYTES = sum(len(str(i)) + 1 for i in range(1, 100001))


@pytest.fixture
def small_runs(tmp_path):
    """``.orch/runs`` of ``tmp_path`` on a 200 KiB tmpfs (private, as orch-tui makes it)."""
    runs = tmp_path / ".orch" / "runs"
    runs.mkdir(parents=True)
    os.chmod(tmp_path / ".orch", 0o700)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k,mode=0700", "tmpfs", str(runs)],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield runs
    finally:
        subprocess.run(["umount", "-l", str(runs)], capture_output=True)


def test_a_full_disk_is_said_once_and_the_runs_record_agrees_with_its_exit_code(
    tmp_path, small_runs
):
    """A step prints 589 KB into a 200 KiB run folder. It used to exit 0 while state.json
    stayed at its first save (``runs``: died, ``ctl wait``: 130), the echo of the output
    stopped without a word, and four warnings came in two formats, one per file."""
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: big, type: shell, run: seq 1 100000}
          - {name: after, type: shell, run: echo after, depends_on: [big]}
        """,
    )
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    (run_dir,) = list(small_runs.iterdir())
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["status"], state["exit_code"]) == ("succeeded", 0)
    assert {s["status"] for s in state["steps"].values()} == {"succeeded"}
    assert [m["text"][:10] for m in state["messages"]] == ["disk full:"]
    runs = run_cli("runs", "--json", cwd=tmp_path)
    assert [r["status"] for r in json.loads(runs.stdout)] == ["succeeded"], runs.stdout
    waited = run_cli("ctl", run_dir.name, "wait", cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr
    assert "Traceback" not in result.stderr
    assert "orch-tui WARNING" not in result.stderr, result.stderr  # one format: the run's lines
    said = re.findall(r"⚠ warning: disk full: No space left on device, writing \S+", result.stdout)
    assert len(said) == 1, result.stdout[-3000:]
    assert "logs/big.log" in said[0]

    logged = (run_dir / "logs" / "big.log").stat().st_size
    lost = re.search(r"big \| … ([\d,]+) more bytes of output lost", result.stdout)
    assert lost, result.stdout[-3000:]  # the echo says where it stops short
    assert logged + int(lost.group(1).replace(",", "")) == SEQ_BYTES
    assert "after | … 6 more bytes of output lost" in result.stdout

    assert sorted(p.name for p in run_dir.iterdir()) == [
        "ctx.json",
        "ctx_out",
        "events.jsonl",
        "logs",
        "state.json",
    ]  # the space held back is given back


LIBRARY = """
import logging

log = logging.getLogger("mylib")


def work(ctx):
    log.warning("careful: %s", 42)
    log.info("detail")
    print("printed")
"""


@pytest.mark.parametrize("debug", [False, True])
def test_a_python_steps_library_logging_is_not_said_by_orch_tui(tmp_path, debug):
    """A library's ``logging`` in a python step used to reach the step's log as
    ``orch-tui WARNING mylib: careful: 42``, orch-tui's own format (the root logger's handler
    was orch-tui's). Now as Python prints it without any set-up (the message), and with
    --debug in a plain ``LEVEL name:`` format."""
    module = write_module(tmp_path, LIBRARY)
    recipe = write_recipe(
        tmp_path, f"steps:\n  - {{name: p, type: python, module: {module}, function: work}}\n"
    )
    result = run_cli(recipe, "--no-ui", *(["--debug"] if debug else []), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (log,) = tmp_path.glob(".orch/runs/*/logs/p.log")
    text = log.read_text()
    assert "orch-tui" not in text, text
    if debug:
        assert text == "WARNING mylib: careful: 42\nINFO mylib: detail\nprinted\n"
    else:
        assert text == "careful: 42\nprinted\n"
        assert "careful" not in result.stderr + result.stdout.replace("p | careful: 42", "")


def test_orch_tuis_own_warnings_on_stderr_look_like_the_runs_messages(tmp_path):
    """A warning orch-tui logs (a file it cannot save once the run's events are closed) is
    written as the headless output writes the run's messages, not ``orch-tui WARNING
    orch.runner: ...`` beside ``⚠ warning: ...``."""
    code = (
        "import tui.cli as c; c._setup_logging(False)\n"
        "from core.log import get_logger\n"
        "get_logger('orch.runner').warning('cannot save %s: %s', 'x', 'No space left')\n"
    )
    result = subprocess.run(
        [PY, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        check=False,
    )
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d ⚠ warning: cannot save x: No space left\n", result.stderr
    ), result.stderr
