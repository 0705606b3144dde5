"""Queue objects in the operator: their settings to the engine, their loops, their status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kflow.api import API_VERSION, Queue, SpecError, parse_manifest
from kflow.api.ids import QueueId
from kflow.api.models import MAX_CONDITION_MESSAGE
from kflow.engine import Engine
from kflow.kube import policy
from kflow.kube.dispatch import Dispatchers, QueueInfo
from kflow.kube.events import EventPoster
from kflow.kube.executor import JobExecutor
from kflow.kube.flows import FlowLifecycle
from kflow.kube.metrics import Metrics
from kflow.kube.pools import WorkerPools
from kflow.kube.status import QueueStatus
from kflow.settings import PodPolicySettings

log = logging.getLogger("kflow.kube")

# `kflow.dev/scaler: external` on a Worker-mode Queue: the operator leaves its workers alone
# (KEDA, an HPA or a person sizes them); it still reports the queue's depth.
ANNOTATION_SCALER = "kflow.dev/scaler"
# The reasons of a Queue's Valid condition and of its Events.
REASON_VALID = "Valid"
REASON_POLICY = "PodPolicyViolation"
REASON_INVALID = "InvalidSpec"


def queue_info(namespace: str, name: str, spec: Mapping[str, Any], uid: str | None = None,
               annotations: Mapping[str, str] | None = None) -> QueueInfo:
    """The Queue object parsed once by the api model (raises SpecError if it is invalid)."""
    queue = parse_manifest({"apiVersion": API_VERSION, "kind": "Queue",
                            "metadata": {"name": name, "namespace": namespace},
                            "spec": dict(spec)})
    assert isinstance(queue, Queue)
    return QueueInfo(queue=queue, uid=uid,
                     external_scaler=(annotations or {}).get(ANNOTATION_SCALER) == "external")


def with_policy_defaults(info: QueueInfo, pod_policy: PodPolicySettings) -> QueueInfo:
    """The QueueInfo whose template carries the policy's defaults: Jobs and worker
    Deployments are built from it as it is."""
    spec = info.queue.spec
    template = policy.with_defaults(spec.template, pod_policy)
    if template == spec.template:
        return info
    queue = info.queue.model_copy(update={"spec": spec.model_copy(update={"template": template})})
    return replace(info, queue=queue)


class QueueControl:
    """One method per Queue event, and `run`, the loops of one Queue (kopf's daemon)."""

    def __init__(self, *, engine: Engine, dispatchers: Dispatchers, executor: JobExecutor,
                 flows: FlowLifecycle, pools: WorkerPools, status: QueueStatus,
                 metrics: Metrics, max_stalled: int, pod_policy: PodPolicySettings,
                 events: EventPoster | None = None) -> None:
        self.engine = engine
        self.dispatchers = dispatchers
        self.executor = executor
        self.flows = flows
        self.pools = pools
        self.status = status
        self.metrics = metrics
        self.max_stalled = max_stalled
        self.pod_policy = pod_policy
        self.events = events
        self._invalid: set[QueueId] = set()  # refused when last seen

    async def seen(self, namespace: str, name: str, spec: Mapping[str, Any],
                   uid: str | None = None, annotations: Mapping[str, str] | None = None,
                   generation: int | None = None) -> None:
        """A Queue was created or changed: its settings apply from the next dispatch on.

        A Queue whose spec is invalid, or whose pod template breaks the operator's pod policy,
        is not served (its nodes wait as for a missing Queue; no pod is made from it) and gets
        Valid=False and a Warning Event naming the field; fixed, it is served again.
        """
        queue_id = QueueId(namespace, name)
        try:
            info = queue_info(namespace, name, spec, uid, annotations)
        except SpecError as exc:
            # The CRD schema and the admission webhook keep such a Queue out; if one got in,
            # its nodes wait as for a missing Queue, and the status says why.
            await self._refuse(queue_id, uid, REASON_INVALID, f"Queue {queue_id}: {exc}",
                               generation)
            return
        broken = policy.violations(info.queue.spec.template, self.pod_policy)
        if broken:
            await self._refuse(queue_id, info.uid, REASON_POLICY,
                               f"{info.queue.object_ref}: {policy.verdict(broken)}", generation)
            return
        info = with_policy_defaults(info, self.pod_policy)
        await self._judged(queue_id, info.uid, True, REASON_VALID,
                           "the pod template is allowed by the operator's pod policy",
                           generation)
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

    async def _refuse(self, queue_id: QueueId, uid: str | None, reason: str,
                      message: str, generation: int | None = None) -> None:
        """Stop serving the Queue: no dispatch and (the pool loop sees it) no workers."""
        if self.dispatchers.queues.pop(queue_id, None) is not None:
            self.dispatchers.kick(queue_id)  # the pool loop drops the Deployment at once
            self.flows.refresh_missing_queues(queue_id.namespace)
        await self._judged(queue_id, uid, False, reason, message, generation)

    async def _judged(self, queue_id: QueueId, uid: str | None, valid: bool, reason: str,
                      message: str, generation: int | None = None) -> None:
        """Write the Valid condition; post an Event when a verdict is new: invalid (Warning),
        or valid again after being invalid (Normal)."""
        message = message[:MAX_CONDITION_MESSAGE]
        try:
            changed = await self.status.set_valid(queue_id, valid, reason, message,
                                                  generation)
        except Exception as exc:  # the verdict holds (the Queue is not served) all the same
            log.warning("Queue %s: could not write its Valid condition: %s", queue_id, exc)
            changed = True
        was_invalid = queue_id in self._invalid
        if valid:
            self._invalid.discard(queue_id)
        else:
            self._invalid.add(queue_id)
        if not changed or (valid and not was_invalid):
            return
        if not valid:
            log.warning("%s; not served until it is fixed", message)
        if self.events is not None:
            involved = {"apiVersion": API_VERSION, "kind": "Queue", "name": queue_id.name,
                        "namespace": queue_id.namespace, "uid": uid}
            self.events.post_on(involved, reason=reason, message=message, warning=not valid)

    def gone(self, namespace: str, name: str) -> None:
        queue_id = QueueId(namespace, name)
        self.dispatchers.queues.pop(queue_id, None)
        self.pools.forget(queue_id)
        self.status.forget(queue_id)
        self.metrics.forget_queue(queue_id)  # a Queue made again starts from zero
        self._invalid.discard(queue_id)
        self.flows.refresh_missing_queues(namespace)

    async def deleted(self, namespace: str, name: str) -> None:
        """A Queue is being deleted (its finalizer): stop serving it and drop what Redis keeps
        for it, its settings and records; nodes still on it stay for a Queue made again."""
        self.gone(namespace, name)
        left = await self.engine.forget_queue(QueueId(namespace, name))
        if left:
            log.info("Queue %s/%s deleted; %d node(s) still on it wait for a Queue of that name",
                     namespace, name, left)

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
