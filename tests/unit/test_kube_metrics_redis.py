"""The operator's metrics from its real parts over a real Redis: a two-node flow on a Job-mode
queue, its Jobs finished by hand (no cluster), then the Flow and the Queue deleted."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from kflow.api.ids import FlowId, QueueId
from kflow.engine import Engine
from kflow.kube.runtime import Runtime
from kflow.settings import Settings
from tests.integration.engine_kit import NS, build, new_ref, node

pytestmark = [pytest.mark.redis]

TEMPLATE = {"template": {"spec": {"containers": [{"name": "main", "image": "runner"}]}}}


class KubeRecorder:
    """The Kubernetes calls this path makes, answered as an empty cluster would; Jobs kept."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    async def create_job(self, namespace: str, job: dict[str, Any]) -> None:
        self.jobs[job["metadata"]["name"]] = job

    async def delete_job(self, namespace: str, name: str) -> None:
        self.jobs.pop(name, None)

    async def job_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return []

    async def flow_jobs(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        return []

    def __getattr__(self, name: str) -> Any:  # status patches, Events: accepted, not kept
        async def accepted(*_args: Any, **_kwargs: Any) -> bool:
            return True
        return accepted


def finished(job: dict[str, Any], *, created: str, completed: str) -> dict[str, Any]:
    """The Job as the watch shows it once it succeeded, with the given timestamps."""
    meta = {**job["metadata"], "creationTimestamp": created}
    return {**job, "metadata": meta, "status": {
        "completionTime": completed, "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": completed}]}}


async def test_a_flow_on_a_job_queue_shows_in_every_metric_and_leaves_with_its_objects(
        redis_srv: Any) -> None:
    client = aioredis.Redis.from_url(redis_srv.url)
    api = KubeRecorder()
    runtime = Runtime(Settings(), Engine(client, prefix=f"m{uuid.uuid4().hex[:8]}"), api,
                      client)
    metrics, queue = runtime.metrics, QueueId(NS, "etl")
    try:
        await runtime.queues.seen(NS, "etl", TEMPLATE, uid=str(uuid.uuid4()))
        ref = new_ref("orders")
        await runtime.engine.submit(ref, build(node("extract", queue="etl"),
                                               node("load", "extract", queue="etl")))
        info = runtime.dispatchers.queues[queue]
        for step, seconds in (("extract", "42"), ("load", "07")):
            [attempt] = await runtime.engine.take(queue, 10, owner="test")
            assert attempt.node == step and attempt.waited_ms is not None
            await runtime.executor.launch(info, attempt)
            [job] = api.jobs.values()
            await runtime.executor.on_job_event("MODIFIED", finished(
                job, created="2026-11-30T10:00:00Z", completed=f"2026-11-30T10:00:{seconds}Z"))
        metrics.flow_phase(ref.uid, "Succeeded")  # as the status patcher reports it

        assert metrics.value("kflow_nodes_dispatched_total", queue=queue) == 2
        assert metrics.value("kflow_nodes_completed_total", queue=queue) == 2
        assert metrics.value("kflow_queue_wait_seconds_count", queue=queue) == 2
        assert metrics.value("kflow_node_duration_seconds_count", queue=queue,
                             outcome="succeeded") == 2
        assert metrics.value("kflow_node_duration_seconds_sum", queue=queue,
                             outcome="succeeded") == 49
        assert metrics.value("kflow_node_duration_seconds_bucket", queue=queue,
                             outcome="succeeded", le="10.0") == 1
        assert metrics.value("kflow_unlock_seconds_count") == 1  # load, after extract
        for script in ("flow/add", "queue/take", "flow/start", "flow/complete"):
            assert (metrics.value("kflow_redis_script_duration_seconds_count",
                                  script=script) or 0) >= 1, script
        assert metrics.value("kflow_flows", phase="Succeeded") == 1

        await runtime.flows.delete({"metadata": {"uid": ref.uid, "namespace": NS,
                                                 "name": "orders"}})
        assert metrics.value("kflow_flows", phase="Succeeded") is None
        assert await runtime.engine.events(FlowId.of(NS, ref.uid)) == []  # keys gone too

        metrics.queue_depth(queue, 0, 0, 0)  # as the queue's housekeeping reports it
        await runtime.queues.deleted(NS, "etl")
        assert f'queue="{queue}"' not in metrics.render()
    finally:
        await runtime.events.drain()
        await client.aclose()
