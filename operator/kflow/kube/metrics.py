"""Prometheus metrics of the operator (prometheus_client), served on /metrics."""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Iterable, Iterator

import prometheus_client
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import kflow
from kflow.api.ids import QueueId

# Each counter would also get a `_created` gauge series per label set: twice the series for
# nothing a dashboard or an alert of kflow reads.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# Operator-side steps: a Redis call, a Job created after its last child finished.
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A node's time in its queue (ready → started) and its run (started → outcome).
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                3600.0)
RUN_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
               4 * 3600.0, 12 * 3600.0)
_DEPTH_HELP = {"ready": "Nodes ready and waiting for a worker or Job.",
               "active": "Nodes running now.",
               "delayed": "Nodes waiting for a delay or backoff."}


class _Snapshots(Collector):
    """The families computed when scraped: flows by phase, Redis persistence (absent until
    known)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time; nothing to check for clashes up front

    def collect(self) -> Iterator[Metric]:
        flows = GaugeMetricFamily("kflow_flows", "Flows the operator tracks, by phase.",
                                  labels=["phase"])
        for phase, n in sorted(Tally(self.metrics.phases.values()).items()):
            flows.add_metric([phase], n)
        yield flows
        if self.metrics.redis_persistence_enabled is not None:
            yield GaugeMetricFamily(
                "kflow_redis_persistence_enabled",
                "1 when Redis persists its data (AOF or RDB snapshots), 0 when a restart "
                "would lose every flow.", value=self.metrics.redis_persistence_enabled)


class Metrics:
    """The operator's metrics in a registry of their own (tests make several); cheap enough
    to update on every event. A deleted Flow or Queue takes its series with it."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Info("kflow_build", "The kflow version this operator runs.",
             registry=registry).info({"version": kflow.__version__})
        self.phases: dict[str, str] = {}  # flow uid -> phase, counted at scrape time
        # 1 when every Redis server kflow uses persists its data, 0 when one does not; None
        # (not exported) until known (CONFIG unavailable and AOF off leaves it unknown).
        self.redis_persistence_enabled: int | None = None
        registry.register(_Snapshots(self))
        self._dispatched = Counter(
            "kflow_nodes_dispatched", "Attempts launched as Jobs.", ["queue"],
            registry=registry)
        self._completed = Counter(
            "kflow_nodes_completed", "Job-mode attempts whose success the engine accepted.",
            ["queue"], registry=registry)
        self._failures = Counter(
            "kflow_node_failures", "Job-mode attempts that failed, by what the engine did "
            "next (retry, failed, requeued, cancelled, stale).", ["queue", "action"],
            registry=registry)
        self._depth = Gauge("kflow_queue_nodes", "Nodes of a queue by state.",
                            ["queue", "state"], registry=registry)
        # One gauge per state as well: what a KEDA or HPA rule sums (see docs/autoscaling.md).
        self._depth_by_state = {
            state: Gauge(f"kflow_queue_{state}", text, ["queue"], registry=registry)
            for state, text in _DEPTH_HELP.items()}
        self._workers = Gauge("kflow_queue_workers", "Worker replicas the operator asks for.",
                              ["queue"], registry=registry)
        self._unlock = Histogram(
            "kflow_unlock_seconds", "From a node's last child's Job seen finished to the "
            "parent's Job created.", buckets=STEP_BUCKETS, registry=registry)
        self._complete = Histogram(
            "kflow_complete_seconds", "Time of the engine's complete step for a finished Job.",
            buckets=STEP_BUCKETS, registry=registry)
        self._node_duration = Histogram(
            "kflow_node_duration_seconds", "From a Job-mode attempt's Job created to its "
            "outcome seen by the operator, by outcome (succeeded, failed).",
            ["queue", "outcome"], buckets=RUN_BUCKETS, registry=registry)
        self._queue_wait = Histogram(
            "kflow_queue_wait_seconds", "From a node ready (or due) in Redis to its Job-mode "
            "attempt started.", ["queue"], buckets=WAIT_BUCKETS, registry=registry)
        self._script = Histogram(
            "kflow_redis_script_duration_seconds", "Round trip of the operator's Redis Lua "
            "scripts, by script; a pipelined batch counts its round trip for each script.",
            ["script"], buckets=STEP_BUCKETS, registry=registry)
        self._per_queue = [self._dispatched, self._completed, self._failures, self._depth,
                           *self._depth_by_state.values(), self._workers,
                           self._node_duration, self._queue_wait]

    # ---- what the operator reports -----------------------------------------------------
    def dispatched(self, queue_id: QueueId) -> None:
        self._dispatched.labels(queue_id).inc()

    def completed(self, queue_id: QueueId, seconds: float, accepted: bool) -> None:
        if accepted:
            self._completed.labels(queue_id).inc()
        self._complete.observe(seconds)

    def unlocked(self, seconds: float) -> None:
        """A parent's Job was created `seconds` after its last child's Job was seen finished."""
        self._unlock.observe(seconds)

    def failed(self, queue_id: QueueId, action: str) -> None:
        self._failures.labels(queue_id, action).inc()

    def node_finished(self, queue_id: QueueId, outcome: str, seconds: float) -> None:
        """A Job-mode attempt ended (`outcome` succeeded or failed) `seconds` after its Job
        was created."""
        self._node_duration.labels(queue_id, outcome).observe(max(0.0, seconds))

    def waited(self, queue_id: QueueId, seconds: float) -> None:
        """A node started `seconds` after it became ready (clocks of Redis and the operator:
        a negative skew counts as 0)."""
        self._queue_wait.labels(queue_id).observe(max(0.0, seconds))

    def script_ran(self, script: str, seconds: float) -> None:
        self._script.labels(script).observe(seconds)

    def queue_depth(self, queue_id: QueueId, ready: int, active: int, delayed: int) -> None:
        for state, n in (("ready", ready), ("active", active), ("delayed", delayed)):
            self._depth.labels(queue_id, state).set(n)
            self._depth_by_state[state].labels(queue_id).set(n)

    def pool_size(self, queue_id: QueueId, replicas: int | None) -> None:
        if replicas is None:
            self._workers.remove_by_labels({"queue": queue_id})
        else:
            self._workers.labels(queue_id).set(replicas)

    def flow_phase(self, uid: str, phase: str) -> None:
        self.phases[uid] = phase

    def redis_persistence(self, enabled: bool | None) -> None:
        self.redis_persistence_enabled = None if enabled is None else int(enabled)

    # ---- deleted objects take their series with them -----------------------------------
    def forget_flow(self, uid: str) -> None:
        """The Flow is deleted: it no longer counts in kflow_flows."""
        self.phases.pop(uid, None)

    def forget_queue(self, queue_id: QueueId) -> None:
        """The Queue is deleted: every series labelled with it goes."""
        for metric in self._per_queue:
            metric.remove_by_labels({"queue": queue_id})

    # ---- exposition --------------------------------------------------------------------
    def render(self) -> str:
        """The text Prometheus scrapes."""
        return generate_latest(self.registry).decode()

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's value (None when the series is not exported)."""
        return self.registry.get_sample_value(name, labels)

    async def serve(self, port: int) -> None:
        """Serve `render()` on http://0.0.0.0:<port>/metrics until cancelled."""
        async def handle(_request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "0.0.0.0", port)
        await site.start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
