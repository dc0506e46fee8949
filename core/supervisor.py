"""Whether a service is restarted when a start of it ends, and after how long.

A background step's ``restart`` policy (core.recipe) says which ends call for a restart:
``on_failure`` a failed exit or failed health checks, ``always`` any end of its own, a clean
exit too (``no``: none; the user's ``restart`` command is not a policy's business). The delay
grows exponentially with the restarts in a row, so a service that cannot start does not spin:
``restart_delay`` × 2^(n-1) before the n-th, at most ``MAX_DELAY`` (or ``restart_delay`` itself
when that is longer). A start that stayed up ``STABLE_AFTER`` seconds ends the row: the next
restart waits ``restart_delay`` again, and ``max_restarts`` (restarts in a row) counts from zero,
so a service that fails once a day is never given up on, while one that crashes at once is after
a few tries.

Pure bookkeeping: the scheduler (core.runner) asks, on its own thread, and does the restart.
"""

from __future__ import annotations

from core.recipe import Step

MAX_DELAY = 30.0
STABLE_AFTER = 60.0
#: ``max_restarts`` when the recipe leaves it out (``always``: no limit)
DEFAULT_MAX_RESTARTS = {"on_failure": 5, "always": None}


class Supervisor:
    """The restart policy of one service, and its restarts in a row."""

    def __init__(self, step: Step) -> None:
        self.policy = step.restart
        self.delay = step.restart_delay
        self.limit: int | None = (
            step.max_restarts
            if step.max_restarts is not None
            else DEFAULT_MAX_RESTARTS.get(self.policy)
        )
        self.in_a_row = 0

    def wants(self, failed: bool) -> bool:
        """The policy restarts a service whose start ended this way (on its own, or unhealthy:
        ``failed``)."""
        return self.policy == "always" or (self.policy == "on_failure" and failed)

    def next_delay(self, uptime: float) -> float | None:
        """Seconds to wait before the next start of a service that was up ``uptime`` seconds,
        counting that restart; None: ``max_restarts`` in a row were made already."""
        if uptime >= STABLE_AFTER:
            self.in_a_row = 0
        if self.limit is not None and self.in_a_row >= self.limit:
            return None
        self.in_a_row += 1
        cap = max(MAX_DELAY, self.delay)
        if self.delay <= 0:
            return 0.0
        # doubled only up to the cap: 2 ** n itself overflows a float past n = 1023, which a
        # service crashing every 2 s reaches in some 9 hours (its restarts 30 s apart, a row
        # never broken)
        delay = self.delay
        for _ in range(self.in_a_row - 1):
            if delay >= cap:
                break
            delay *= 2
        return min(delay, cap)

    def reset(self) -> None:
        """The user started the step afresh (retry): a new row."""
        self.in_a_row = 0
