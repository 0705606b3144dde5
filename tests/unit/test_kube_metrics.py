"""The operator's metrics by the book: prometheus_client families with HELP, the process and
build collectors, and series that leave with their Flow or Queue."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

import kflow
from kflow.api.ids import QueueId
from kflow.kube.metrics import Metrics

ETL, MEDIA = QueueId("team", "etl"), QueueId("team", "media")


def exercised() -> Metrics:
    """A Metrics object with every kind of report made, on two queues."""
    metrics = Metrics()
    for queue in (ETL, MEDIA):
        metrics.dispatched(queue)
        metrics.completed(queue, 0.004, accepted=True)
        metrics.failed(queue, "retry")
        metrics.queue_depth(queue, 5, 2, 1)
        metrics.pool_size(queue, 3)
        metrics.node_finished(queue, "succeeded", 42.0)
        metrics.waited(queue, 0.3)
    metrics.unlocked(0.02)
    metrics.script_ran("flow/complete", 0.0007)
    metrics.flow_phase("uid-1", "Running")
    metrics.flow_phase("uid-2", "Running")
    metrics.flow_phase("uid-3", "Succeeded")
    metrics.redis_persistence(True)
    return metrics


def test_every_family_has_help_and_the_process_platform_and_build_collectors_are_there() -> None:
    families = {f.name: f for f in text_string_to_metric_families(exercised().render())}

    assert [name for name, f in families.items() if not f.documentation] == []
    kflow_families = {name for name in families if name.startswith("kflow_")}
    assert kflow_families == {
        "kflow_build_info", "kflow_flows", "kflow_redis_persistence_enabled",
        "kflow_nodes_dispatched", "kflow_nodes_completed", "kflow_node_failures",
        "kflow_queue_nodes", "kflow_queue_ready", "kflow_queue_active", "kflow_queue_delayed",
        "kflow_queue_workers", "kflow_unlock_seconds", "kflow_complete_seconds",
        "kflow_node_duration_seconds", "kflow_queue_wait_seconds",
        "kflow_redis_script_duration_seconds"}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info",
            "python_gc_collections"} <= set(families)
    [build] = families["kflow_build_info"].samples
    assert build.name == "kflow_build_info" and build.value == 1
    assert build.labels == {"version": kflow.__version__}
    # Counters by the book: `_total`, and no `_created` twin per series.
    assert families["kflow_nodes_dispatched"].type == "counter"
    assert {s.name for s in families["kflow_nodes_dispatched"].samples} == {
        "kflow_nodes_dispatched_total"}


def test_the_recorded_values_are_what_is_exported() -> None:
    metrics = exercised()
    assert metrics.value("kflow_nodes_dispatched_total", queue=ETL) == 1
    assert metrics.value("kflow_node_failures_total", queue=ETL, action="retry") == 1
    assert metrics.value("kflow_flows", phase="Running") == 2
    assert metrics.value("kflow_flows", phase="Succeeded") == 1
    assert metrics.value("kflow_node_duration_seconds_bucket", queue=ETL,
                         outcome="succeeded", le="30.0") == 0
    assert metrics.value("kflow_node_duration_seconds_bucket", queue=ETL,
                         outcome="succeeded", le="60.0") == 1
    assert metrics.value("kflow_node_duration_seconds_sum", queue=ETL,
                         outcome="succeeded") == 42
    assert metrics.value("kflow_queue_wait_seconds_bucket", queue=MEDIA, le="0.25") == 0
    assert metrics.value("kflow_queue_wait_seconds_bucket", queue=MEDIA, le="0.5") == 1
    assert metrics.value("kflow_redis_script_duration_seconds_count",
                         script="flow/complete") == 1
    metrics.waited(ETL, -0.5)  # Redis's clock a little ahead of the operator's
    assert metrics.value("kflow_queue_wait_seconds_bucket", queue=ETL, le="0.01") == 1


def test_a_deleted_queue_takes_all_its_series_and_leaves_the_others() -> None:
    metrics = exercised()
    metrics.forget_queue(ETL)

    samples = [s for f in text_string_to_metric_families(metrics.render()) for s in f.samples]
    assert [s for s in samples if s.labels.get("queue") == ETL] == []
    media = {s.name for s in samples if s.labels.get("queue") == MEDIA}
    assert media == {
        "kflow_nodes_dispatched_total", "kflow_nodes_completed_total",
        "kflow_node_failures_total", "kflow_queue_nodes", "kflow_queue_ready",
        "kflow_queue_active", "kflow_queue_delayed", "kflow_queue_workers",
        "kflow_node_duration_seconds_bucket", "kflow_node_duration_seconds_count",
        "kflow_node_duration_seconds_sum", "kflow_queue_wait_seconds_bucket",
        "kflow_queue_wait_seconds_count", "kflow_queue_wait_seconds_sum"}
    # A Queue made again under the same name starts from zero.
    metrics.dispatched(ETL)
    assert metrics.value("kflow_nodes_dispatched_total", queue=ETL) == 1


def test_a_deleted_flow_no_longer_counts_in_its_phase() -> None:
    metrics = exercised()
    metrics.forget_flow("uid-3")
    metrics.forget_flow("uid-1")
    assert metrics.value("kflow_flows", phase="Succeeded") is None
    assert metrics.value("kflow_flows", phase="Running") == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.dispatched(ETL)
    assert one.value("kflow_nodes_dispatched_total", queue=ETL) == 1
    assert two.value("kflow_nodes_dispatched_total", queue=ETL) is None


async def test_the_endpoint_serves_the_registry_in_the_prometheus_text_format() -> None:
    metrics = exercised()
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = asyncio.create_task(metrics.serve(port))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # until the server listens
                try:
                    response = await session.get(f"http://127.0.0.1:{port}/metrics")
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            text = await response.text()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        [sample] = [s for s in families["kflow_nodes_dispatched"].samples
                    if s.labels == {"queue": ETL}]
        assert sample.value == 1
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
