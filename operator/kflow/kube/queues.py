"""Queue objects in the operator: their settings to the engine, their loops, their status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kflow.api import API_VERSION, Queue, SpecError, parse_manifest
from kflow.api.ids import QueueId
from kflow.engine import Engine
from kflow.kube.dispatch import Dispatchers, QueueInfo
from kflow.kube.executor import JobExecutor
from kflow.kube.flows import FlowLifecycle
from kflow.kube.pools import WorkerPools
from kflow.kube.status import QueueStatus

log = logging.getLogger("kflow.kube")

# `kflow.dev/scaler: external` on a Worker-mode Queue: the operator leaves its workers alone
# (KEDA, an HPA or a person sizes them); it still reports the queue's depth.
ANNOTATION_SCALER = "kflow.dev/scaler"


def queue_info(namespace: str, name: str, spec: Mapping[str, Any], uid: str | None = None,
               annotations: Mapping[str, str] | None = None) -> QueueInfo:
    """The Queue object parsed once by the api model (raises SpecError if it is invalid)."""
    queue = parse_manifest({"apiVersion": API_VERSION, "kind": "Queue",
                            "metadata": {"name": name, "namespace": namespace},
                            "spec": dict(spec)})
    assert isinstance(queue, Queue)
    return QueueInfo(queue=queue, uid=uid,
                     external_scaler=(annotations or {}).get(ANNOTATION_SCALER) == "external")


class QueueControl:
    """One method per Queue event, and `run`, the loops of one Queue (kopf's daemon)."""

    def __init__(self, *, engine: Engine, dispatchers: Dispatchers, executor: JobExecutor,
                 flows: FlowLifecycle, pools: WorkerPools, status: QueueStatus,
                 max_stalled: int) -> None:
        self.engine = engine
        self.dispatchers = dispatchers
        self.executor = executor
        self.flows = flows
        self.pools = pools
        self.status = status
        self.max_stalled = max_stalled

    async def seen(self, namespace: str, name: str, spec: Mapping[str, Any],
                   uid: str | None = None, annotations: Mapping[str, str] | None = None) -> None:
        """A Queue was created or changed: its settings apply from the next dispatch on."""
        try:
            info = queue_info(namespace, name, spec, uid, annotations)
        except SpecError as exc:
            # The CRD schema and the admission webhook keep such a Queue out; if one got in,
            # its nodes wait as for a missing Queue, and the log says why.
            log.warning("Queue %s/%s is invalid and is not served: %s", namespace, name, exc)
            return
        previous = self.dispatchers.queues.get(info.queue_id)
        if previous is not None and info.uid is None:
            info.uid = previous.uid  # the daemon's call does not know it; the event's did
        if previous != info:
            config = replace(info.config, max_stalled=self.max_stalled)
            await self.engine.configure_queue(info.queue_id, config)
            self.dispatchers.queues[info.queue_id] = info
            log.info("Queue %s: mode %s, concurrency %s, rate %s/%sms", info.queue_id, info.mode,
                     config.concurrency, config.rate_max, config.rate_per_ms)
            self.dispatchers.kick(info.queue_id)
            if previous is None:
                self.flows.refresh_missing_queues(namespace)

    def gone(self, namespace: str, name: str) -> None:
        queue_id = QueueId(namespace, name)
        self.dispatchers.queues.pop(queue_id, None)
        self.pools.forget(queue_id)
        self.status.forget(queue_id)
        self.flows.refresh_missing_queues(namespace)

    async def run(self, namespace: str, name: str, stopped: Any) -> None:
        """The queue's loops until `stopped`: Job dispatch, and the worker pool's scaler."""
        queue_id = QueueId(namespace, name)
        await asyncio.gather(
            self.dispatchers.run(queue_id, stopped, self.executor.launch, self._housekeep),
            self.pools.run(queue_id, stopped))

    async def _housekeep(self, queue_id: QueueId) -> None:
        await self.executor.housekeep(queue_id)
        ready, active, delayed = await self.engine.queue_depth(queue_id)
        await self.status.report(queue_id, ready, active, delayed)
