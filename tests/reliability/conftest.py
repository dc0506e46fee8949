"""The fault-injection suite's own fixture and hooks (tests/reliability).

Its tests use the suite's shared helpers (tests/conftest.py, tests/tui_helpers.py). ``faults``
tallies the faults each test injects so the run ends with the figures the issue asks for
(tried, survived, lost); every test here is marked ``reliability``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

#: (module, kind) -> [tried, survived, lost], over the whole session
FAULTS: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
_TALLY = pytest.StashKey["FaultTally"]()
HERE = Path(__file__).parent


class FaultTally:
    """One test's faults: ``tried(kind)`` before injecting, ``survived(kind)`` once the checks
    that prove it was survived have passed, ``lost(kind, n)`` for data found lost.

    Nothing reaches the session's figures until the test has ended: its tried and lost faults
    then, its survived ones only if the test passed (a check after ``survived`` failed too). So
    a figure is what the test's own assertions proved, whichever tests ran and in what order.
    """

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])

    def tried(self, kind: str, n: int = 1) -> None:
        self.counts[kind][0] += n

    def survived(self, kind: str, n: int = 1) -> None:
        self.counts[kind][1] += n

    def lost(self, kind: str, n: int = 1) -> None:
        self.counts[kind][2] += n


@pytest.fixture
def faults(request: pytest.FixtureRequest) -> FaultTally:
    """This test's tally (one per test, also across the examples of a hypothesis test)."""
    return request.node.stash.setdefault(_TALLY, FaultTally())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/reliability/ is marked ``reliability`` (``-m "not reliability"``
    leaves the fault-injection suite out; ``make test`` runs it)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.reliability)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Adds a finished test's tally to the session's (see ``FaultTally``)."""
    outcome = yield
    tally = item.stash.get(_TALLY, None)
    if tally is None or call.when != "call":
        return
    passed = outcome.get_result().passed
    module = item.path.stem
    for kind, (tried, survived, lost) in tally.counts.items():
        total = FAULTS[(module, kind)]
        total[0] += tried
        total[1] += survived if passed else 0
        total[2] += lost


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # pragma: no cover - report
    if not FAULTS:
        return
    terminalreporter.section("reliability: faults injected")
    total = [0, 0, 0]
    for module, kind in sorted(FAULTS):
        tried, survived, lost = FAULTS[(module, kind)]
        total = [total[0] + tried, total[1] + survived, total[2] + lost]
        terminalreporter.write_line(
            f"{module + ': ' + kind:<72} tried {tried:>5}  survived {survived:>5}  lost {lost}"
        )
    terminalreporter.write_line(
        f"{'total':<72} tried {total[0]:>5}  survived {total[1]:>5}  lost {total[2]}"
    )
