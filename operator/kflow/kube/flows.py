"""The life of a Flow in the operator: admit, suspend and resume, cancel, retry, delete, TTL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kflow.api.errors import SpecError, error_lines
from kflow.api.ids import FlowId, QueueId
from kflow.api.models import API_VERSION, MAX_CONDITION_MESSAGE
from kflow.api.states import TERMINAL_PHASES
from kflow.engine import Engine, FlowNotFound, FlowRef
from kflow.graph.verdict import check_manifest
from kflow.kube.dispatch import Dispatchers, FlowRoutes
from kflow.kube.events import EventPoster, FlowEvent
from kflow.kube.jobs import job_state
from kflow.kube.k8s import KubeApi
from kflow.kube.metrics import Metrics
from kflow.kube.notify import Notifier
from kflow.kube.recording import CONDITION_STATE_LOST, Recording, decide, finished, lost_message
from kflow.kube.status import FlowView, StatusPatcher, now_rfc3339
from kflow.settings import StatusSettings

log = logging.getLogger("kflow.kube")


def _flow_document(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": "Flow",
        "metadata": {k: meta.get(k) for k in ("name", "generateName", "namespace", "uid",
                                              "generation") if meta.get(k) is not None},
        "spec": dict(body.get("spec") or {}),
    }


class FlowLifecycle:
    """One method per Flow event; owns the Flows' status (`status`) and their TTL timers."""

    def __init__(self, *, engine: Engine, api: KubeApi, dispatchers: Dispatchers,
                 routes: FlowRoutes, events: EventPoster, metrics: Metrics,
                 settings: StatusSettings, notifier: Notifier | None = None) -> None:
        self.engine = engine
        self.notifier = notifier
        self.api = api
        self.dispatchers = dispatchers
        self.routes = routes
        self.events = events
        self.metrics = metrics
        self.status = StatusPatcher(
            patch=api.patch_flow_status, snapshot=engine.snapshot,
            on_phase_change=self._phase_changed, interval=settings.interval_seconds,
            max_failures=settings.max_failures, outage=dispatchers.outage)

    async def admit(self, body: Mapping[str, Any]) -> None:
        """Create or resume: validate, compile, record the graph in Redis, start tracking."""
        meta = body.get("metadata") or {}
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        spec = body.get("spec") or {}
        old_status = body.get("status") or {}
        view = self.status.track(FlowView(
            uid=uid, namespace=namespace, name=name, generation=meta.get("generation"),
            ttl_seconds=spec.get("ttlSecondsAfterFinished"), phase=old_status.get("phase"),
            conditions={c.get("type"): dict(c) for c in old_status.get("conditions") or []}))
        try:
            compiled = check_manifest(_flow_document(body)).compiled
            assert compiled is not None  # a Flow document always compiles or raises
        except SpecError as exc:
            # The same lines as `kflow lint` and the admission webhook, schema and graph
            # problems together; bounded like every condition message.
            message = "\n".join(error_lines(exc))[:MAX_CONDITION_MESSAGE]
            already = view.conditions.get("Valid", {})
            view.valid, view.invalid_message = False, message
            await self.status.flush(uid)
            if not (already.get("status") == "False" and already.get("message") == message):
                self.events.post(FlowEvent(uid, namespace, name, "InvalidSpec", message,
                                           warning=True))
            log.warning("Flow %s/%s is invalid: %s", namespace, name, message)
            return
        view.valid, view.invalid_message = True, ""
        self.routes.add(uid, {n.name: n.queue for n in compiled.nodes.values()},
                        compiled.queues)
        ref = FlowRef(uid=uid, namespace=namespace, name=name)
        decision = decide(old_status, await self._in_redis(ref.id))
        if self.notifier is not None:  # a flow that finished unnoticed is notified now
            self.notifier.watch(uid, namespace, name, spec.get("notify"),
                                old_status if finished(old_status) else {})
        if decision is Recording.EXPIRED or decision is Recording.LOST:
            self._gone(view, old_status, decision)
            return
        view.recorded_at = view.recorded_at or old_status.get("recordedAt")
        if finished(old_status):
            # Finished before this operator started: its TTL counts from its own finishedAt
            # (the timer of the operator that saw it finish is gone with that process).
            view.last_status = view.last_status or dict(old_status)
            self._schedule_ttl(view)
        wanted_suspended = bool(spec.get("suspend") or spec.get("cancel"))
        # A graph not yet marked in the Flow is recorded held: no node starts before the
        # Flow says it was recorded, so a later loss of Redis's state is never mistaken for
        # a flow that was never recorded (kflow.kube.recording).
        hold = decision is not Recording.RESUME
        created = await self.engine.submit(
            ref, compiled, ttl_seconds_after_finished=spec.get("ttlSecondsAfterFinished"),
            suspended=wanted_suspended or hold)
        if hold:
            await self._mark_recorded(view)
            if not wanted_suspended:
                await self.engine.resume(ref.id)
        if created:
            log.info("Flow %s/%s: %d nodes recorded in Redis", namespace, name,
                     len(compiled.nodes))
            if spec.get("cancel"):
                await self.cancel(body)
        elif not hold:
            # Resumed after a restart: a crash between a flow step and its queue step left
            # ready nodes off their queue; put them back.
            await self.engine.reconcile_flow(FlowId.of(namespace, uid))
        self.refresh_missing_queues(namespace)
        for queue in compiled.queues:
            self.dispatchers.kick(QueueId(namespace, queue))
        await self.status.flush(uid)

    async def _in_redis(self, flow_id: FlowId) -> bool:
        try:
            await self.engine.snapshot(flow_id)
        except FlowNotFound:
            return False
        return True

    async def _mark_recorded(self, view: FlowView) -> None:
        """Store `status.recordedAt` in the Flow; raises (kopf retries the admission) if the
        API server does not take it, so the held graph is released only once it is stored."""
        view.recorded_at = now_rfc3339()
        view.lost_message = None
        if not await self.api.patch_flow_status(view.namespace, view.name,
                                                {"recordedAt": view.recorded_at}):
            raise FlowNotFound(f"Flow {view.namespace}/{view.name} is gone")

    def _gone(self, view: FlowView, old_status: Mapping[str, Any],
              decision: Recording) -> None:
        """Redis has no state for a flow that was recorded: never record it again."""
        view.last_status = dict(old_status)
        view.recorded_at = old_status.get("recordedAt")
        if decision is Recording.EXPIRED:
            view.expired = True
            log.info("Flow %s/%s finished (%s) and its state is no longer in Redis; it is not "
                     "run again", view.namespace, view.name, old_status.get("phase"))
            self._schedule_ttl(view)
            return
        message = lost_message(view.namespace, view.name, view.recorded_at)
        first = view.lost_message is None and \
            (view.conditions.get(CONDITION_STATE_LOST) or {}).get("status") != "True"
        view.lost_message = message
        self.status.mark(view.uid)
        if first:
            log.warning("%s", message)
            self.events.post(FlowEvent(view.uid, view.namespace, view.name, "StateLost",
                                       message[:MAX_CONDITION_MESSAGE], warning=True))

    async def set_suspended(self, body: Mapping[str, Any], suspended: bool) -> None:
        uid = body["metadata"]["uid"]
        flow_id = FlowId.of(body["metadata"]["namespace"], uid)
        try:
            if suspended:
                await self.engine.suspend(flow_id)
            else:
                await self.engine.resume(flow_id)
        except FlowNotFound:
            return
        self.dispatchers.kick_namespace(body["metadata"]["namespace"])
        self.status.mark(uid)

    async def cancel(self, body: Mapping[str, Any]) -> None:
        """Stop the flow: no more dispatches, running Jobs deleted, phase Cancelled."""
        meta = body["metadata"]
        try:
            await self.engine.cancel(FlowId.of(meta["namespace"], meta["uid"]))
        except FlowNotFound:
            return
        for job in await self.api.flow_jobs(meta["namespace"], meta["uid"]):
            if job_state(job) == "running":
                await self.api.delete_job(meta["namespace"], job["metadata"]["name"])
        self.dispatchers.kick_namespace(meta["namespace"])
        self.status.mark(meta["uid"])

    async def retry(self, body: Mapping[str, Any]) -> None:
        """Put the flow's failed nodes back to ready (the kflow.dev/retry annotation); a flow
        whose state was lost starts over (the user asked for exactly that)."""
        meta = body["metadata"]
        view = self.status.views.get(meta["uid"])
        if view is not None and view.lost_message is not None:
            log.info("Flow %s/%s: retry requested after its state was lost; recording it "
                     "again", meta["namespace"], meta["name"])
            view.lost_message = None
            status = {k: v for k, v in (body.get("status") or {}).items()
                      if k not in ("recordedAt", "total", "phase")}
            await self.admit({**body, "status": status})
            self.events.post(FlowEvent(meta["uid"], meta["namespace"], meta["name"],
                                       "StartedOver", "state was lost; recorded again on "
                                       "request: every node runs again", warning=False))
            return
        if view is not None and view.expired:
            self.events.post(FlowEvent(
                meta["uid"], meta["namespace"], meta["name"], "NothingToRetry",
                "the flow finished and its state has left Redis (ttlSecondsAfterFinished); "
                "create the Flow again to run it again", warning=True))
            return
        try:
            count = await self.engine.retry_failed(FlowId.of(meta["namespace"], meta["uid"]))
        except FlowNotFound:
            return
        log.info("Flow %s/%s: %d failed node(s) back to ready", meta["namespace"], meta["name"],
                 count)
        if count:
            self.events.post(FlowEvent(meta["uid"], meta["namespace"], meta["name"], "Retried",
                                       f"{count} failed node(s) retried", warning=False))
        self.dispatchers.kick_namespace(meta["namespace"])
        self.status.mark(meta["uid"])

    async def delete(self, body: Mapping[str, Any]) -> None:
        """Finalizer: the flow's Redis keys go now; its Jobs go with it."""
        meta = body["metadata"]
        uid = meta["uid"]
        self.status.forget(uid)
        self.routes.forget(uid)
        if self.notifier is not None:
            self.notifier.forget(uid)
        self.metrics.forget_flow(uid)
        await self.engine.delete(FlowId.of(meta["namespace"], uid))
        # The garbage collector would remove them after the Flow; do it now, pods included.
        for job in await self.api.flow_jobs(meta["namespace"], uid):
            await self.api.delete_job(meta["namespace"], job["metadata"]["name"])
        log.info("Flow %s/%s deleted: Redis keys and Jobs removed", meta["namespace"],
                 meta["name"])

    def refresh_missing_queues(self, namespace: str) -> None:
        """Recompute the QueueMissing condition of every flow of the namespace."""
        for uid, view in list(self.status.views.items()):
            if view.namespace != namespace or not self.routes.knows(uid):
                continue
            missing = tuple(sorted(q for q in self.routes.node_queues(uid)
                                   if QueueId(namespace, q) not in self.dispatchers.queues))
            if missing != view.missing_queues:
                view.missing_queues = missing
                self.status.mark(uid)

    def progressed_on(self, namespace: str, queue: str) -> set[str]:
        """Workers moved this queue's flows on: mark the unfinished ones for a status refresh;
        returns the other queues those flows use (a parent may have become ready there)."""
        others: set[str] = set()
        for uid, names in self.routes.queue_names():
            view = self.status.views.get(uid)
            if queue not in names or view is None or view.namespace != namespace \
                    or view.phase in TERMINAL_PHASES:
                continue
            self.status.mark(uid)
            others.update(names)
        others.discard(queue)
        return others

    def _phase_changed(self, view: FlowView, previous: str) -> None:
        phase = view.phase or ""
        self.metrics.flow_phase(view.uid, phase)
        if not view.valid:
            return

        def event(reason: str, message: str, *, warning: bool = False) -> None:
            self.events.post(FlowEvent(view.uid, view.namespace, view.name, reason, message,
                                       warning=warning))

        if phase == "Succeeded":
            progress = (view.last_status or {}).get("progress")
            event("FlowSucceeded", f"all nodes done ({progress})")
        elif phase == "Failed":
            failures = (view.last_status or {}).get("firstFailures") or []
            cause = f': node "{failures[0]["node"]}": {failures[0]["error"][:300]}' \
                if failures else ""
            event("FlowFailed", f"flow failed{cause}", warning=True)
        elif phase == "Cancelled":
            event("FlowCancelled", "flow cancelled")
        if phase in TERMINAL_PHASES:
            self._schedule_ttl(view)
            if self.notifier is not None:
                self.notifier.finished(view.uid, view.last_status)

    def _schedule_ttl(self, view: FlowView) -> None:
        """Delete the Flow ttlSecondsAfterFinished after it finished (kept when unset)."""
        if view.ttl_seconds is None or view.ttl_task is not None:
            return
        finished = (view.last_status or {}).get("finishedAt")
        finished_at = datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp() \
            if finished else time.time()
        delay = max(0.0, finished_at + view.ttl_seconds - time.time())

        async def expire() -> None:
            await asyncio.sleep(delay)
            log.info("Flow %s/%s: ttlSecondsAfterFinished passed; deleting it", view.namespace,
                     view.name)
            await self.api.delete_flow(view.namespace, view.name)

        view.ttl_task = asyncio.create_task(expire())
