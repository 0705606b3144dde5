"""Tiny node handlers for the operator e2e tests: cheap, deterministic, driven by `data`."""

from __future__ import annotations

import time
from typing import Any

from kflow.sdk.job import Job


def echo(job: Job) -> dict[str, Any]:
    """Return the node's data, name, attempt and every child value: parents see all inputs."""
    return {"node": job.name, "data": job.data, "attempt": job.attempt,
            "children": job.children_values(), "ignored": job.ignored_failures(),
            "failed": job.failed_children()}


def add_one(job: Job) -> int:
    """Sum of the children's integer values plus one (a leaf returns data.value + 1)."""
    values = job.children_values()
    if not values:
        return int((job.data or {}).get("value", 0)) + 1
    return sum(int(v) for v in values.values() if isinstance(v, int)) + 1


def total(job: Job) -> dict[str, Any]:
    """Aggregate a fan-out: how many children and the sum of their numeric results."""
    values = job.children_values()
    return {"count": len(values),
            "sum": sum(v for v in values.values() if isinstance(v, int | float))}


def square(job: Job) -> int:
    time.sleep(float((job.data or {}).get("sleep", 0)))
    return int(job.data["n"]) ** 2


def fail(job: Job) -> None:
    raise RuntimeError(f"node {job.name} fails on purpose (attempt {job.attempt})")


def flaky(job: Job) -> dict[str, Any]:
    """Fail until attempt `data.succeed_on`, then succeed."""
    succeed_on = int((job.data or {}).get("succeed_on", 2))
    if job.attempt < succeed_on:
        raise RuntimeError(f"transient failure on attempt {job.attempt}")
    return {"succeeded_on": job.attempt}


def sleep(job: Job) -> dict[str, Any]:
    """Sleep `data.seconds` (used for timeouts and for deleting a running pod)."""
    time.sleep(float((job.data or {}).get("seconds", 60)))
    return {"slept": True, "attempt": job.attempt}


def gated(job: Job) -> dict[str, Any]:
    """Fail until the test opens the gate: Redis key `kflow-test:gate:<flow uid>` exists."""
    import os

    import redis

    client = redis.Redis.from_url(os.environ["KFLOW_REDIS_URL"])
    if not client.exists(f"kflow-test:gate:{job.flow.uid}"):
        raise RuntimeError("the gate is closed")
    return {"passed_on": job.attempt}


def counted(job: Job) -> dict[str, Any]:
    """A side effect the test can count (a payment): INCR `kflow-test:effects:<uid>:<node>`."""
    import os

    import redis

    client = redis.Redis.from_url(os.environ["KFLOW_REDIS_URL"])
    runs = int(client.incr(f"kflow-test:effects:{job.flow.uid}:{job.name}"))
    return {"node": job.name, "runs": runs}


def wait_for_gate(job: Job) -> dict[str, Any]:
    """Run until the test opens the gate (`kflow-test:gate:<flow uid>`), at most 10 minutes."""
    import os

    import redis

    client = redis.Redis.from_url(os.environ["KFLOW_REDIS_URL"])
    deadline = time.monotonic() + 600
    while not client.exists(f"kflow-test:gate:{job.flow.uid}"):
        if time.monotonic() > deadline:
            raise RuntimeError("the gate stayed closed")
        time.sleep(0.5)
    return {"node": job.name, "attempt": job.attempt}


def chatty(job: Job) -> dict[str, Any]:
    """Print known lines to stdout and stderr and one job.log() line, each naming the attempt;
    fail every attempt before `data.succeed_on` (default 2)."""
    import sys

    print(f"chatty {job.name} attempt {job.attempt}: to stdout", flush=True)
    print(f"chatty {job.name} attempt {job.attempt}: to stderr", file=sys.stderr, flush=True)
    job.log(f"chatty {job.name} attempt {job.attempt}: through job.log")
    if job.attempt < int((job.data or {}).get("succeed_on", 2)):
        raise RuntimeError(f"chatty {job.name} fails attempt {job.attempt} on purpose")
    return {"succeeded_on": job.attempt}


def numbers(job: Job) -> dict[str, Any]:
    """A list to map over: `{"items": [0, 1, ..., data.n - 1]}`."""
    return {"items": list(range(int(job.data["n"])))}


def tally(job: Job) -> int:
    """One item of a map: counts its own run (HINCRBY `kflow-test:runs:<uid>` by node name),
    returns twice the item."""
    import os

    import redis

    client = redis.Redis.from_url(os.environ["KFLOW_REDIS_URL"])
    client.hincrby(f"kflow-test:runs:{job.flow.uid}", job.name, 1)
    return 2 * int(job.data["item"])


def merged(job: Job) -> dict[str, Any]:
    """The parent of a map: its value is the items' values in item order."""
    [values] = job.children_values().values()
    return {"count": len(values), "sum": sum(values),
            "in_order": values == sorted(values)}
