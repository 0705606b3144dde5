"""Worker-mode queues: each one's loop that keeps its worker Deployment sized to its depth."""

from __future__ import annotations

import logging
import time
from typing import Any

from kflow.api.ids import QueueId
from kflow.api.models import API_VERSION
from kflow.engine import Engine
from kflow.kube.dispatch import Dispatchers, QueueInfo, wait_any
from kflow.kube.events import EventPoster
from kflow.kube.flows import FlowLifecycle
from kflow.kube.jobs import RedisEnv
from kflow.kube.k8s import KubeApi
from kflow.kube.metrics import Metrics
from kflow.kube.scaler import (
    NotOurDeployment,
    PoolState,
    deployment_name,
    not_ours_message,
    owns,
    reconcile_worker_pool,
    retire_legacy_pool,
)
from kflow.kube.status import QueueStatus

log = logging.getLogger("kflow.kube")

# A Worker-mode queue's pool is reconciled this often, and at once when work arrives.
POOL_TICK_SECONDS = 1.0
# Flows served by a worker pool progress without the operator seeing it; their status is
# refreshed while the pool works, and at least this often otherwise.
POOL_STATUS_SAFETY_SECONDS = 5.0


class WorkerPools:
    """The worker Deployments of Worker-mode queues, and what their workers' progress means
    for the flows (status refresh) and the other queues (a parent may have become ready)."""

    def __init__(self, *, engine: Engine, api: KubeApi, dispatchers: Dispatchers,
                 flows: FlowLifecycle, status: QueueStatus, metrics: Metrics,
                 redis_env: RedisEnv, events: EventPoster | None = None) -> None:
        self.engine = engine
        self.events = events
        self.api = api
        self.dispatchers = dispatchers
        self.flows = flows
        self.status = status
        self.metrics = metrics
        self.redis_env = redis_env
        self.pools: dict[str, PoolState] = {}

    def forget(self, queue_id: QueueId) -> None:
        self.pools.pop(queue_id, None)

    async def run(self, queue_id: QueueId, stopped: Any) -> None:
        """Reconcile a Worker-mode queue's Deployment every second, and when kicked."""
        wake = self.dispatchers.pool_wakeup(queue_id)
        was_worker: bool | None = None
        last_depth: tuple[int, int] | None = None
        last_marked = 0.0
        failing = ""
        while not stopped:
            wake.clear()
            info = self.dispatchers.queues.get(queue_id)
            timeout = POOL_TICK_SECONDS
            try:
                if info is None:
                    # Not served (its template breaks the pod policy, say): no workers, also
                    # none left from before the operator started.
                    if was_worker is not False:
                        await self.drop(queue_id, "not served")
                    was_worker = False
                elif info.mode != "Worker":
                    if was_worker is not False:
                        await self.drop(queue_id, "not in Worker mode")
                    was_worker = False
                    timeout = 60.0  # only a mode change (which kicks) matters here
                else:
                    was_worker = True
                    depth = await self._tick(info)
                    self.dispatchers.outage.succeeded()
                    # Workers move the queue's flows on without the operator seeing it:
                    # refresh their status, and wake the other queues their parents use.
                    busy = depth[0] + depth[1] > 0 or depth != last_depth
                    if busy or time.monotonic() - last_marked >= POOL_STATUS_SAFETY_SECONDS:
                        self._progressed(info)
                        last_marked = time.monotonic()
                    last_depth = depth
                failing = ""
            except Exception as exc:
                wait = self.dispatchers.outage.failed(exc, f"worker pool of queue {queue_id}")
                if wait is not None:  # said once for all loops; the pool waits for Redis
                    await wait_any(wake, stopped, wait)
                    continue
                # Logged once per distinct error, not every second while it lasts.
                if isinstance(exc, NotOurDeployment):
                    if str(exc) != failing:
                        self._not_ours(queue_id, info, str(exc))
                elif str(exc) != failing:
                    log.exception("worker pool of queue %s: reconcile failed; retrying every "
                                  "%.0f s", queue_id, timeout)
                failing = str(exc)
            await wait_any(wake, stopped, timeout)

    async def _tick(self, info: QueueInfo) -> tuple[int, int]:
        """One reconcile of the queue's pool; returns (ready, active)."""
        queue_id = info.queue_id
        # The Deployment is owned by the Queue: its uid comes from the watch event.
        queue = info.queue.model_copy(
            update={"metadata": info.queue.metadata.model_copy(update={"uid": info.uid})})
        await self.engine.promote_due(queue_id)  # no dispatcher promotes delayed nodes here
        if info.external_scaler:
            ready, active, delayed = await self.engine.queue_depth(queue_id)
            await self.status.report(queue_id, ready, active, delayed)
            return ready, active
        state = self.pools.get(queue_id)
        if state is None:  # first look at this pool in this process
            await retire_legacy_pool(queue_id, info.uid, self.api)
            state = self.pools[queue_id] = PoolState()
        report = await reconcile_worker_pool(queue, self.engine, self.api, state,
                                             redis=self.redis_env)
        self.metrics.pool_size(queue_id, report.replicas)
        await self.status.report(queue_id, report.ready, report.active, report.delayed,
                                 workers=report.pods)
        return report.ready, report.active

    def _not_ours(self, queue_id: QueueId, info: QueueInfo | None, message: str) -> None:
        """Say on the Queue (an Event) and in the log that its pool's name is taken."""
        log.warning("%s", message)
        if self.events is not None:
            self.events.post_on({"apiVersion": API_VERSION, "kind": "Queue",
                                 "name": queue_id.name, "namespace": queue_id.namespace,
                                 "uid": info.uid if info else None},
                                reason="DeploymentNotOwned", message=message, warning=True)

    def _progressed(self, info: QueueInfo) -> None:
        for name in self.flows.progressed_on(info.namespace, info.name):
            other = self.dispatchers.queues.get(QueueId(info.namespace, name))
            # Worker-mode queues look every second anyway; kicking them would make two busy
            # pools of one flow wake each other without pause.
            if other is not None and other.mode == "Job":
                self.dispatchers.kick(other.queue_id)

    async def drop(self, queue_id: QueueId, why: str) -> None:
        """The queue keeps no worker Deployment (its mode changed, or it is not served)."""
        self.pools.pop(queue_id, None)
        self.metrics.pool_size(queue_id, None)
        name = deployment_name(queue_id.name)
        found = await self.api.read_deployment(queue_id.namespace, name)
        if found is None:
            return
        if not owns(found, queue_id.name, None):
            log.info("%s", not_ours_message(queue_id, name))
            return
        await self.api.delete_deployment(queue_id.namespace, name)
        log.info("Queue %s: %s; Deployment %s deleted", queue_id, why, name)
