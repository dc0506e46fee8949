"""Whether a service is restarted when a start of it ends, and after how long.

A background step's ``restart`` policy (core.recipe) says which ends call for a restart:
``on_failure`` a failed exit or failed health checks, ``always`` any end of its own, a clean
exit too (``no``: none; the user's ``restart`` command is not a policy's business). The delay
grows exponentially with the restarts in a row, so a service that cannot start does not spin:
``restart_delay`` × 2^(n-1) before the n-th, at most ``MAX_DELAY`` (or ``restart_delay`` itself
when that is longer); ``restart_delay: 0`` restarts at once the first time, then as from
``MIN_BACKOFF``. A start that stayed up ``STABLE_AFTER`` seconds ends the row: the next
restart waits ``restart_delay`` again, and ``max_restarts`` (restarts in a row) counts from zero,
so a service that fails once a day is never given up on, while one that crashes at once is after
a few tries.

Pure bookkeeping: the scheduler (core.runner) asks, on its own thread, and does the restart.
"""

from __future__ import annotations

from core.recipe import Step

MAX_DELAY = 30.0
#: ``restart_delay: 0``: the restarts after the first in a row wait this, doubled each time
MIN_BACKOFF = 0.1
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
        if self.delay > 0:
            base, doublings = self.delay, self.in_a_row - 1
        elif self.in_a_row == 1:
            return 0.0  # ``restart_delay: 0``: the first restart at once
        else:  # then as from MIN_BACKOFF: a crash loop must not spin (a core, and events.jsonl
            # growing by a megabyte a second)
            base, doublings = MIN_BACKOFF, self.in_a_row - 2
        # 2.0 ** n overflows past n = 1023 (a row of some 9 hours of a service crashing every
        # 2 s, restarted 30 s apart); the product itself may be inf, which min takes
        return min(base * 2.0 ** min(doublings, 1023), max(MAX_DELAY, self.delay))

    def reset(self) -> None:
        """The user started the step afresh (retry): a new row."""
        self.in_a_row = 0
