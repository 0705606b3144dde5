"""Say once that Redis is unreachable and once that it is back, however many loops see it."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from kflow.store.connect import unreachable_reason

log = logging.getLogger("kflow.redis")

# How long a loop that met the outage waits before it looks again: doubling from the first,
# up to the cap, with jitter so that the operator's loops do not all knock at once.
FIRST_WAIT_S = 0.5
MAX_WAIT_S = 10.0


class RedisOutage:
    """A process's view of Redis reachability, shared by its periodic loops (the operator's
    dispatch, pool and status loops; a worker's take and completion loops).

    A loop that catches an error calls `failed`: when Redis cannot be reached it gets back how
    long to wait (and the first such error of an outage is logged, once, without a
    traceback); any other error gets None and is the loop's to report. A loop whose Redis work
    succeeded calls `succeeded`, which logs once that Redis is back and for how long it was
    not.
    """

    def __init__(self, *, max_wait: float = MAX_WAIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_wait = max_wait
        self.clock = clock
        self.since: float | None = None  # when the outage began (clock time), None when up
        self._failures = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, where: str) -> float | None:
        """Record `exc` met by `where` (a loop's name); seconds to wait, or None when `exc` is
        not Redis being unreachable."""
        reason = unreachable_reason(exc)
        if reason is None:
            return None
        if self.since is None:
            self.since = self.clock()
            self._failures = 0
            log.warning("Redis unreachable: %s (seen by %s); waiting for it, and saying so "
                        "again when it is back", reason, where)
        self._failures += 1
        cap = min(self.max_wait, FIRST_WAIT_S * 2.0 ** min(self._failures - 1, 10))
        return cap / 2 + random.random() * cap / 2

    def succeeded(self) -> None:
        """Redis answered: the end of an outage, if there was one."""
        if self.since is None:
            return
        log.warning("Redis reachable again after %.0fs", self.clock() - self.since)
        self.since = None
        self._failures = 0
