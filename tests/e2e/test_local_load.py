"""Under load the engine never runs more nodes of a queue than its concurrency allows."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kflow.api import FlowId, load_manifests
from kflow.cli.local.command import queue_configs
from kflow.cli.local.runner import LocalRunner
from kflow.engine import Engine, FlowRef
from kflow.graph import compile_flow
from kflow.sdk import Job
from kflow.store.connect import connect

pytestmark = pytest.mark.redis

ITEMS = 50
CONCURRENCY = 5


def fan_out_yaml(namespace: str) -> str:
    children = "\n".join(
        f"    - {{name: item-{i}, queue: work, data: {{n: {i}}}}}" for i in range(ITEMS))
    return f"""apiVersion: kflow.dev/v1alpha1
kind: Queue
metadata: {{name: work, namespace: {namespace}}}
spec: {{concurrency: {CONCURRENCY}}}
---
apiVersion: kflow.dev/v1alpha1
kind: Flow
metadata: {{name: load, namespace: {namespace}}}
spec:
  nodes:
  - name: total
    queue: sum
    children:
{children}
"""


async def test_three_runners_on_one_queue_never_exceed_its_concurrency(redis_srv) -> None:
    namespace = f"load-{uuid.uuid4().hex[:8]}"
    objects = load_manifests(fan_out_yaml(namespace))
    flow = next(o for o in objects if type(o).__name__ == "Flow")
    compiled = compile_flow(flow)
    running = 0
    most = 0
    calls: list[str] = []

    async def work(job: Job) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        calls.append(job.name)
        try:
            await asyncio.sleep(0.02)
            return int(job.data["n"])
        finally:
            running -= 1

    def total(job: Job) -> int:
        return sum(job.children_values().values())

    handlers = {"work": work, "sum": total}
    redis = await connect(redis_srv.url)
    try:
        engine = Engine(redis)
        for queue_id, config in queue_configs(
                namespace, compiled.queues,
                [o for o in objects if type(o).__name__ == "Queue"]).items():
            await engine.configure_queue(queue_id, config)
        uid = f"load-{uuid.uuid4().hex}"
        assert await engine.submit(FlowRef(uid, namespace, "load"), compiled)
        # Each runner alone would start up to 64 at once: only the engine holds them to 5.
        runners = [LocalRunner(engine, handlers, max_parallel=64) for _ in range(3)]
        snapshots = await asyncio.wait_for(
            asyncio.gather(*(r.run(uid, namespace, compiled) for r in runners)), timeout=60)
        assert {s.phase for s in snapshots} == {"Succeeded"}
        assert most == CONCURRENCY  # reached, never exceeded
        assert sorted(calls) == sorted(f"item-{i}" for i in range(ITEMS))  # each ran once
        assert sum(r.stats.completed for r in runners) == ITEMS + 1
        assert max(r.stats.max_running.get(f"{namespace}/work", 0) for r in runners) \
            <= CONCURRENCY
        infos = await engine.node_infos(FlowId(namespace, uid))
        assert infos["total"].result == sum(range(ITEMS))
    finally:
        await redis.aclose()
