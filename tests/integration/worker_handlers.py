"""Handlers for the worker-process tests: each run is recorded in Redis; data sets behaviour."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["KFLOW_TEST_REDIS_URL"])
    return _client


def run(job: Any) -> int:
    """Return the node's `value` plus its children's values; `sleep` seconds first.

    With KFLOW_TEST_HANG=1 in the worker's environment every node hangs (a worker to kill).
    A run is recorded (flow|node|attempt|pid) only once the handler is done, so a run that
    was cut short never counts.
    """
    data = job.data or {}
    if os.environ.get("KFLOW_TEST_HANG") == "1":
        time.sleep(3600)
    time.sleep(float(data.get("sleep", 0)))
    value = int(data.get("value", 0)) + sum(int(v) for v in job.children_values().values())
    _redis().rpush(os.environ.get("KFLOW_TEST_RUNS_KEY", "test:runs"),
                   f"{job.flow.uid}|{job.name}|{job.attempt}|{os.getpid()}")
    return value
