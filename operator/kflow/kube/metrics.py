"""Prometheus metrics of the operator, served as plain text on /metrics (no client library)."""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter

from aiohttp import web

from kflow.api.ids import QueueId

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Counters and one histogram, kept in memory; cheap enough to update on every event."""

    def __init__(self) -> None:
        self.dispatched_total: Counter[str] = Counter()
        self.completed_total: Counter[str] = Counter()
        self.failed_total: Counter[tuple[str, str]] = Counter()
        self.depth: dict[str, tuple[int, int, int]] = {}
        self.pools: dict[str, int] = {}  # worker replicas asked for, per Worker-mode queue
        self.phases: dict[str, str] = {}
        self.unlock_seconds: list[float] = []  # last 10,000, for percentiles
        self._unlock_buckets = [0] * (len(_BUCKETS) + 1)
        self._unlock_sum = 0.0
        self._complete_buckets = [0] * (len(_BUCKETS) + 1)
        self._complete_sum = 0.0
        self._complete_count = 0
        # 1 when every Redis server kflow uses persists its data, 0 when one does not; None
        # (not exported) until known (CONFIG unavailable and AOF off leaves it unknown).
        self.redis_persistence_enabled: int | None = None

    def dispatched(self, queue_id: QueueId) -> None:
        self.dispatched_total[queue_id] += 1

    def completed(self, queue_id: QueueId, seconds: float, accepted: bool) -> None:
        if accepted:
            self.completed_total[queue_id] += 1
        self._complete_buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self._complete_sum += seconds
        self._complete_count += 1

    def unlocked(self, seconds: float) -> None:
        """A parent's Job was created `seconds` after its last child's Job was seen finished."""
        self._unlock_buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self._unlock_sum += seconds
        self.unlock_seconds.append(seconds)
        if len(self.unlock_seconds) > 10_000:
            del self.unlock_seconds[:1000]

    def failed(self, queue_id: QueueId, action: str) -> None:
        self.failed_total[(queue_id, action)] += 1

    def queue_depth(self, queue_id: QueueId, ready: int, active: int, delayed: int) -> None:
        self.depth[queue_id] = (ready, active, delayed)

    def pool_size(self, queue_id: QueueId, replicas: int | None) -> None:
        if replicas is None:
            self.pools.pop(queue_id, None)
        else:
            self.pools[queue_id] = replicas

    def flow_phase(self, uid: str, phase: str) -> None:
        self.phases[uid] = phase

    def redis_persistence(self, enabled: bool | None) -> None:
        self.redis_persistence_enabled = None if enabled is None else int(enabled)

    def render(self) -> str:
        lines = ["# TYPE kflow_nodes_dispatched_total counter"]
        lines += [f'kflow_nodes_dispatched_total{{queue="{q}"}} {n}'
                  for q, n in sorted(self.dispatched_total.items())]
        lines.append("# TYPE kflow_nodes_completed_total counter")
        lines += [f'kflow_nodes_completed_total{{queue="{q}"}} {n}'
                  for q, n in sorted(self.completed_total.items())]
        lines.append("# TYPE kflow_node_failures_total counter")
        lines += [f'kflow_node_failures_total{{queue="{q}",action="{a}"}} {n}'
                  for (q, a), n in sorted(self.failed_total.items())]
        lines.append("# TYPE kflow_queue_nodes gauge")
        for q, (ready, active, delayed) in sorted(self.depth.items()):
            lines += [f'kflow_queue_nodes{{queue="{q}",state="ready"}} {ready}',
                      f'kflow_queue_nodes{{queue="{q}",state="active"}} {active}',
                      f'kflow_queue_nodes{{queue="{q}",state="delayed"}} {delayed}']
        # One gauge per state as well: what a KEDA or HPA rule sums (see docs/autoscaling.md).
        for state, index, text in (("ready", 0, "Nodes ready and waiting for a worker or Job."),
                                   ("active", 1, "Nodes running now."),
                                   ("delayed", 2, "Nodes waiting for a delay or backoff.")):
            lines.append(f"# HELP kflow_queue_{state} {text}")
            lines.append(f"# TYPE kflow_queue_{state} gauge")
            lines += [f'kflow_queue_{state}{{queue="{q}"}} {depth[index]}'
                      for q, depth in sorted(self.depth.items())]
        lines.append("# HELP kflow_queue_workers Worker replicas the operator asks for.")
        lines.append("# TYPE kflow_queue_workers gauge")
        lines += [f'kflow_queue_workers{{queue="{q}"}} {n}' for q, n in sorted(self.pools.items())]
        lines.append("# TYPE kflow_flows gauge")
        for phase, n in sorted(Counter(self.phases.values()).items()):
            lines.append(f'kflow_flows{{phase="{phase}"}} {n}')
        lines.append("# TYPE kflow_unlock_seconds histogram")
        cumulative = 0
        for bound, count in zip(_BUCKETS, self._unlock_buckets, strict=False):
            cumulative += count
            lines.append(f'kflow_unlock_seconds_bucket{{le="{bound}"}} {cumulative}')
        count_all = sum(self._unlock_buckets)
        lines.append(f'kflow_unlock_seconds_bucket{{le="+Inf"}} {count_all}')
        lines.append(f"kflow_unlock_seconds_sum {self._unlock_sum:.6f}")
        lines.append(f"kflow_unlock_seconds_count {count_all}")
        lines.append("# TYPE kflow_complete_seconds histogram")
        cumulative = 0
        for bound, count in zip(_BUCKETS, self._complete_buckets, strict=False):
            cumulative += count
            lines.append(f'kflow_complete_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'kflow_complete_seconds_bucket{{le="+Inf"}} {self._complete_count}')
        lines.append(f"kflow_complete_seconds_sum {self._complete_sum:.6f}")
        lines.append(f"kflow_complete_seconds_count {self._complete_count}")
        if self.redis_persistence_enabled is not None:
            lines.append("# HELP kflow_redis_persistence_enabled 1 when Redis persists its data "
                         "(AOF or RDB snapshots), 0 when a restart would lose every flow.")
            lines.append("# TYPE kflow_redis_persistence_enabled gauge")
            lines.append(f"kflow_redis_persistence_enabled {self.redis_persistence_enabled}")
        return "\n".join(lines) + "\n"

    async def serve(self, port: int) -> None:
        """Serve `render()` on http://0.0.0.0:<port>/metrics until cancelled."""
        async def handle(_request: web.Request) -> web.Response:
            return web.Response(text=self.render(), content_type="text/plain")

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
