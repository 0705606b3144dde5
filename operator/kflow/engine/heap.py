"""How a long-running engine process treats Python's cycle collector.

Every node a worker, the local runner or the operator handles passes through a handful of
short-lived container objects (decoded script rows, leases, attempts). With the default
collector settings (a young collection every 700 allocations, a full one every 100 young
ones) a 10,000-node flow triggers about 450 young and 4 full collections, and each full one
walks every object the imports created (~45,000). None of those objects is garbage, and the
rows die by reference counting long before a collection would find them.
"""

from __future__ import annotations

import gc

# Young collections every 10,000 allocations instead of 700; the older generations keep
# their default ratio to it. Measured in bench/RESULTS.md ("Redesign (issue 9)").
YOUNG_THRESHOLD = 10_000


def tune_collector() -> None:
    """Call once, after imports and set-up, before the process starts its long loop: moves
    what exists now out of the collector's sight (gc.freeze) and collects young objects
    less often. Cycles are still found; a process holds at most ~10,000 more objects
    before a young collection."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
