"""The chaos suite's node code: each run records its side effect in a ledger the test reads.

The ledger lives in the test's counter Redis (KFLOW_CHAOS_LEDGER_URL), never in the Redis a
fault takes down, under keys outside kflow's prefix (kflow.devkit.chaos.Ledger reads them).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

from kflow.devkit.chaos import LEDGER
from kflow.sdk.job import Job


def counted(job: Job) -> dict[str, Any]:
    """Sleep `data.seconds`, then do the side effect: append this run to the ledger."""
    ledger = redis.Redis.from_url(os.environ["KFLOW_CHAOS_LEDGER_URL"])
    ledger.incr(f"{LEDGER}:{job.flow.uid}:started")
    time.sleep(float((job.data or {}).get("seconds", 0)))
    run = {"node": job.name, "attempt": job.attempt, "pidns": os.readlink("/proc/self/ns/pid"),
           "at": time.time()}
    ledger.rpush(f"{LEDGER}:{job.flow.uid}", json.dumps(run))
    return {"node": job.name, "children": len(job.children_values())}
