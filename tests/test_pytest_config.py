"""The test suite's own promises: plain ``pytest`` collects every module, ``-m reliability``
selects exactly tests/reliability/, and a hang in a teardown cannot stop the suite from ending."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT, kill_tree

PYTEST = Path(sys.executable).parent / "pytest"  # the console script, not ``python -m pytest``


def _collected(*args: str) -> list[str]:
    result = subprocess.run(
        [str(PYTEST), "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_plain_pytest_collects_everything_and_the_reliability_marker_splits_it():
    reliability = _collected("-m", "reliability")
    others = _collected("-m", "not reliability")
    assert reliability and all(i.startswith("tests/reliability/") for i in reliability)
    assert others and not [i for i in others if i.startswith("tests/reliability/")]
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
    assert {i.split("::")[0] for i in reliability + others} == on_disk


def test_a_hanging_teardown_after_a_failed_test_times_out(tmp_path):
    """pytest-timeout cancels its alarm when a test fails; tests/conftest.py arms it again for
    the teardown. Here the test fails and both of its finalisers then hang."""
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 2\n")
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_teardown, pytest_timeout_set_timer\n"
    )
    (tmp_path / "test_hang.py").write_text(
        textwrap.dedent(
            """
            import subprocess
            import pytest

            @pytest.fixture(params=["first", "second"])
            def hangs_at_teardown():
                yield
                subprocess.run(["sleep", "1000"])  # no timeout: a command that never returns

            @pytest.fixture
            def hangs_too():
                yield
                subprocess.run(["sleep", "1000"])

            def test_fails(hangs_at_teardown, hangs_too):
                assert False, "the failure that cancels pytest-timeout's alarm"
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=90)  # without the fresh alarm: never returns
    finally:
        kill_tree(proc)  # its group: the sleeps too, if a teardown was not interrupted
    assert "2 failed, 2 errors" in out, out[-3000:]
    assert out.count("Failed: Timeout") >= 2, out[-3000:]
