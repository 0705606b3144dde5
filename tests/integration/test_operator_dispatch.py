"""The per-queue dispatch loop over a real Redis: woken by kicks, bounded by concurrency."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from kflow.api import FlowId, QueueId, parse_manifest
from kflow.engine import Attempt, Engine, FlowRef, QueueConfig
from kflow.graph import compile_flow
from kflow.kube.dispatch import Dispatchers, QueueInfo
from kflow.kube.queues import queue_info
from tests.integration.engine_kit import Stopped

pytestmark = [pytest.mark.redis]



def fan_out(n: int, queue: str) -> Any:
    doc = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
           "metadata": {"name": "fan", "namespace": "ns"},
           "spec": {"nodes": [{"name": "agg", "queue": "agg", "children": [
               {"name": f"i{k}", "queue": queue} for k in range(n)]}]}}
    return compile_flow(parse_manifest(doc))  # type: ignore[arg-type]


TEMPLATE = {"template": {"spec": {"containers": [{"name": "main", "image": "runner"}]}}}

@pytest.fixture
async def engine(redis_srv: Any) -> Any:
    client = aioredis.Redis.from_url(redis_srv.url)
    yield Engine(client, prefix=f"t{uuid.uuid4().hex[:8]}")
    await client.aclose()


async def test_dispatcher_never_exceeds_concurrency_and_wakes_on_kicks(engine: Engine) -> None:
    queue_id = QueueId("ns", "items")
    await engine.configure_queue(queue_id, QueueConfig(concurrency=3))
    dispatchers = Dispatchers(engine, identity="test", batch=10, lease_ms=60_000,
                              idle_recheck=3600)  # no safety-net wake-ups: only kicks count
    dispatchers.queues[queue_id] = queue_info("ns", "items", {**TEMPLATE, "concurrency": 3})
    running: dict[str, Attempt] = {}
    most = 0
    launched: list[str] = []

    async def launch(_queue: QueueInfo, attempt: Attempt) -> None:
        nonlocal most
        running[attempt.node] = attempt
        launched.append(attempt.node)
        most = max(most, len(running))

    async def housekeep(_queue_id: QueueId) -> None:
        return None

    uid = str(uuid.uuid4())
    await engine.submit(FlowRef(uid, "ns", "fan"), fan_out(12, "items"))
    stopped = Stopped()
    loop = asyncio.create_task(dispatchers.run(queue_id, stopped, launch, housekeep))
    try:
        while len(launched) < 12:
            await asyncio.wait_for(_until(lambda: len(running) == 3 or
                                          len(launched) == 12), timeout=10)
            # Finish one running node, as the Job watch would, and kick the queue.
            node, attempt = next(iter(running.items()))
            outcome = await engine.complete(FlowId("ns", uid), node, attempt.token, 1)
            assert outcome.accepted
            del running[node]
            dispatchers.kick(queue_id)
            await asyncio.sleep(0)
    finally:
        stopped.set()
        await asyncio.wait_for(loop, timeout=5)
    assert sorted(launched) == sorted(f"i{k}" for k in range(12))
    assert most == 3


async def test_dispatcher_ignores_worker_mode_and_missing_queues(engine: Engine) -> None:
    dispatchers = Dispatchers(engine, identity="test", batch=10, lease_ms=60_000,
                              idle_recheck=3600)
    worker_queue = QueueId("ns", "w")
    dispatchers.queues[worker_queue] = queue_info("ns", "w", {**TEMPLATE, "mode": "Worker",
                                                              "workers": {"max": 2}})
    uid = str(uuid.uuid4())
    await engine.submit(FlowRef(uid, "ns", "fan"), fan_out(2, "w"))
    launched: list[str] = []

    async def launch(_queue: QueueInfo, attempt: Attempt) -> None:
        launched.append(attempt.node)

    async def housekeep(_queue_id: QueueId) -> None:
        return None

    stopped = Stopped()
    loop = asyncio.create_task(dispatchers.run(worker_queue, stopped, launch, housekeep))
    await asyncio.sleep(0.3)
    dispatchers.kick(worker_queue)
    await asyncio.sleep(0.3)
    stopped.set()
    await asyncio.wait_for(loop, timeout=5)
    assert launched == []
    assert (await engine.queue_depth(worker_queue))[0] == 2, "the nodes stay ready for workers"


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_a_rate_limited_queue_takes_the_next_window_without_a_kick(engine: Engine) -> None:
    """A take that the rate limit cut short waits for the next window, not for a kick or the
    lease-long safety net (nothing finishes here: the pods could not even be scheduled)."""
    queue_id = QueueId("ns", "limited")
    await engine.configure_queue(queue_id, QueueConfig(rate_max=2, rate_per_ms=200))
    dispatchers = Dispatchers(engine, identity="test", batch=10, lease_ms=600_000,
                              idle_recheck=3600)  # no safety-net wake-ups within the test
    dispatchers.queues[queue_id] = queue_info(
        "ns", "limited", {**TEMPLATE, "rateLimit": {"max": 2, "per": "200ms"}})
    launched: list[str] = []

    async def launch(_queue: QueueInfo, attempt: Attempt) -> None:
        launched.append(attempt.node)

    async def housekeep(_queue_id: QueueId) -> None:
        return None

    await engine.submit(FlowRef(str(uuid.uuid4()), "ns", "fan"), fan_out(6, "limited"))
    stopped = Stopped()
    loop = asyncio.create_task(dispatchers.run(queue_id, stopped, launch, housekeep))
    try:
        # Three windows of two; the bug waited lease_ms / 3 (200 s) after the first.
        await asyncio.wait_for(_until(lambda: len(launched) == 6), timeout=20)
    finally:
        stopped.set()
        await asyncio.wait_for(loop, timeout=5)
    assert sorted(launched) == sorted(f"i{k}" for k in range(6))
