"""The life of a Flow in the operator: admit, suspend and resume, cancel, retry, delete, TTL,
and a new run when its spec changes (kflow.kube.runs)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kflow.api.errors import SpecError, error_lines
from kflow.api.ids import FlowId, QueueId
from kflow.api.models import API_VERSION, MAX_CONDITION_MESSAGE, FlowTemplate
from kflow.api.states import TERMINAL_PHASES, FlowPhase, NodeState
from kflow.engine import EXIT_SUFFIX, Engine, FlowNotFound, FlowRef, FlowSnapshot
from kflow.graph.dag import CompiledFlow
from kflow.graph.templates import check_template, expand, template_spec
from kflow.graph.verdict import check_manifest
from kflow.kube import runs
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

# The change policies under which a changed spec starts a new run (Reject refuses the change).
SWITCHING = ("Queue", "Restart")
# Engine work a flow step left (a forEach adding its items, a condition to judge) that has
# not moved for this long: whoever was doing it stopped (a worker pod that completed the
# map's from node and died), so the operator carries on (Engine.reconcile_flow: every chunk
# is fenced, every judgement made once).
EXPANSION_STALL_SECONDS = 10.0


class StalledWork:
    """Tells, from a flow's snapshots, when its expansions or judgements stopped moving: the
    work is pending (a node expanding or deciding) and neither the node count nor those
    counts changed for `stall_seconds`. Pure: the caller passes the clock."""

    def __init__(self, stall_seconds: float = EXPANSION_STALL_SECONDS) -> None:
        self.stall_seconds = stall_seconds
        self._seen: dict[FlowId, tuple[tuple[int, int, int], float]] = {}

    def stalled(self, flow_id: FlowId, snapshot: FlowSnapshot, now: float) -> bool:
        pending = (snapshot.counts.get(NodeState.EXPANDING, 0),
                   snapshot.counts.get(NodeState.DECIDING, 0))
        if not any(pending) or snapshot.phase in TERMINAL_PHASES:
            self._seen.pop(flow_id, None)
            return False
        signature = (snapshot.total, *pending)
        seen = self._seen.get(flow_id)
        if seen is None or seen[0] != signature:
            self._seen[flow_id] = (signature, now)
            return False
        if now - seen[1] < self.stall_seconds:
            return False
        self._seen[flow_id] = (signature, now)  # once per stall period
        return True

    def pending(self, flow_id: FlowId) -> bool:
        """Whether the flow has such work (as of its last snapshot)."""
        return flow_id in self._seen

    def forget(self, flow_id: FlowId) -> None:
        self._seen.pop(flow_id, None)


def _flow_document(body: Mapping[str, Any],
                   pinned: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Flow as `check_manifest` reads it; `pinned`: the nodes and defaults a FlowTemplate
    gave this run (status.template.spec), in place of spec.templateRef."""
    meta = body.get("metadata") or {}
    spec = dict(body.get("spec") or {})
    if pinned is not None:
        spec.pop("templateRef", None)
        spec.update({key: pinned[key] for key in ("nodes", "defaults", "onExit")
                     if key in pinned})
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": "Flow",
        "metadata": {k: meta.get(k) for k in ("name", "generateName", "namespace", "uid",
                                              "generation") if meta.get(k) is not None},
        "spec": spec,
    }


class TemplateMissing(Exception):
    """A Flow's spec.templateRef names no FlowTemplate (yet)."""


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
        # One admission or run switch of a Flow at a time (kopf's handlers, the events of its
        # Jobs and a queued change may each start one).
        self._locks: dict[str, asyncio.Lock] = {}
        # The Flows this process admitted once (kflow.kube.handlers: the Flow's first event
        # or kopf's resume, whichever comes first, admits it; the other leaves it be).
        self._admitted: set[str] = set()
        # Flow uid -> (FlowTemplate name, the Flow as last admitted) while it is invalid.
        self._awaiting_template: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Flow uid -> the Flow as last seen with a change waiting (changePolicy: Queue).
        self._queued_body: dict[str, Mapping[str, Any]] = {}
        # Flow id -> when the operator first saw one of its map nodes adding items.
        self._stalled = StalledWork()
        self.status = StatusPatcher(
            patch=api.patch_flow_status, snapshot=self._snapshot,
            on_phase_change=self._phase_changed, interval=settings.interval_seconds,
            max_failures=settings.max_failures, outage=dispatchers.outage)

    async def _snapshot(self, flow_id: FlowId) -> FlowSnapshot:
        """The flow's snapshot for its status; engine work that stalled is taken over."""
        snapshot = await self.engine.snapshot(flow_id)
        await self._read_exit_handlers(flow_id)
        if self._stalled.stalled(flow_id, snapshot, time.monotonic()):
            task = asyncio.get_running_loop().create_task(self._take_over(flow_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._stalled.pending(flow_id):
            self.status.mark(flow_id.uid)  # looked at again next interval, marked or not
        return snapshot

    async def _read_exit_handlers(self, flow_id: FlowId) -> None:
        """Read the exit handlers' flow for the status (followed until it ends) and post
        ExitHandlerFailed once when it fails; the Flow's own phase never depends on it."""
        view = self.status.views.get(flow_id.uid)
        if view is None or not view.exit_total:
            return
        before = view.exit_snapshot
        after = view.exit_snapshot = await self.engine.exit_snapshot(flow_id)
        if after is None:
            return
        if after.phase not in TERMINAL_PHASES:
            self.status.mark(flow_id.uid)  # looked at again next interval, marked or not
            return
        reported = ((view.last_status or {}).get("exitHandlers") or {}).get("phase")
        if after.phase is FlowPhase.FAILED and reported != "Failed" and \
                (before is None or before.phase is not FlowPhase.FAILED):
            first = after.failures[0] if after.failures else None
            cause = f': node "{first.node}": {first.error[:300]}' if first else ""
            self.events.post(FlowEvent(
                view.uid, view.namespace, view.name, "ExitHandlerFailed",
                f"exit handlers failed{cause} (the flow's outcome is unchanged)",
                warning=True))

    async def _take_over(self, flow_id: FlowId) -> None:
        log.info("Flow %s: a forEach's items or a condition were left half done; the "
                 "operator goes on", flow_id)
        try:
            await self.engine.reconcile_flow(flow_id)
        except Exception:  # tried again after the next stall period
            log.exception("Flow %s: going on with its forEach items or conditions failed",
                          flow_id)
        self.dispatchers.kick_namespace(flow_id.namespace)

    def _lock(self, uid: str) -> asyncio.Lock:
        lock = self._locks.get(uid)
        if lock is None:
            lock = self._locks[uid] = asyncio.Lock()
        return lock

    async def admit(self, body: Mapping[str, Any], once: bool = False) -> None:
        """Create or resume: validate, compile, record the graph in Redis, start tracking.
        `once`: not if this process admitted the Flow before. Two handlers may each be first
        to meet a Flow in one pass over the same event, and the second one's copy of it is
        older than what the first one did (its status says nothing of a run just switched)."""
        uid = body["metadata"]["uid"]
        async with self._lock(uid):
            if once and uid in self._admitted:
                return
            await self._admit(body)
            self._admitted.add(uid)

    def admitted(self, uid: str) -> bool:
        """Whether this process admitted the Flow (and has not deleted it since)."""
        return uid in self._admitted

    async def _admit(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        spec = body.get("spec") or {}
        old_status = body.get("status") or {}
        view = self.status.track(FlowView(
            uid=uid, namespace=namespace, name=name, generation=meta.get("generation"),
            ttl_seconds=spec.get("ttlSecondsAfterFinished"), phase=old_status.get("phase"),
            conditions={c.get("type"): dict(c) for c in old_status.get("conditions") or []}))
        view.spec_digest = old_status.get("specDigest")
        view.run_generation = old_status.get("runGeneration")
        view.runs = list(old_status.get("runs") or [])
        if runs.changed(old_status, spec) and spec.get("changePolicy") in SWITCHING:
            # The spec changed while no operator ran (or one stopped mid-switch).
            await self._switch(body, view)
            return
        try:
            compiled = await self._compile(body, view, old_status)
        except TemplateMissing as exc:
            await self._invalid(view, str(exc), reason="TemplateNotFound")
            return
        except SpecError as exc:
            # The same lines as `kflow lint` and the admission webhook, schema and graph
            # problems together; bounded like every condition message.
            await self._invalid(view, "\n".join(error_lines(exc))[:MAX_CONDITION_MESSAGE])
            return
        view.valid, view.invalid_message, view.invalid_reason = True, "", "InvalidSpec"
        self._awaiting_template.pop(uid, None)
        self.routes.add(uid, {n.name: n.queue for n in compiled.nodes.values()},
                        compiled.queues)
        exits = compiled.on_exit
        view.exit_total = 0 if exits is None else len(exits.nodes)
        if exits is not None:  # the exit flow's nodes wake their queues' dispatchers too
            self.routes.add(uid + EXIT_SUFFIX, {n.name: n.queue for n in exits.nodes.values()},
                            exits.queues)
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
            await self._mark_recorded(view, spec)
            if not wanted_suspended:
                await self.engine.resume(ref.id)
        elif view.spec_digest is None:
            # Recorded by a kflow before runs existed, when its spec could not change: the
            # spec it has is the one its run executes.
            view.spec_digest = runs.spec_digest(spec)
            view.run_generation = view.run_generation or view.generation
            await self.api.patch_flow_status(namespace, name, {
                "specDigest": view.spec_digest, "runGeneration": view.run_generation})
        if created:
            log.info("Flow %s/%s: %d nodes recorded in Redis", namespace, name,
                     len(compiled.nodes))
            if spec.get("cancel"):
                await self.cancel(body)
        elif not hold:
            # Resumed after a restart: a crash between a flow step and its queue step left
            # ready nodes off their queue; put them back.
            await self.engine.reconcile_flow(FlowId.of(namespace, uid))
        self.refresh_missing_queues(namespace, uid)
        for queue in compiled.queues:
            self.dispatchers.kick(QueueId(namespace, queue))
        await self.status.flush(uid)

    async def _invalid(self, view: FlowView, message: str, reason: str = "InvalidSpec") -> None:
        already = view.conditions.get("Valid", {})
        view.valid, view.invalid_message, view.invalid_reason = False, message, reason
        await self.status.flush(view.uid)
        if not (already.get("status") == "False" and already.get("message") == message):
            self.events.post(FlowEvent(view.uid, view.namespace, view.name, reason, message,
                                       warning=True))
        log.warning("Flow %s/%s is invalid: %s", view.namespace, view.name, message)

    async def _compile(self, body: Mapping[str, Any], view: FlowView,
                       status: Mapping[str, Any]) -> CompiledFlow:
        """The run's graph. A Flow made from a FlowTemplate runs the template as it was pinned
        in its status when the run was recorded; a run not yet recorded reads the template
        now and pins it before anything is written to Redis. Raises SpecError, or
        TemplateMissing (the Flow waits for the template)."""
        spec = body.get("spec") or {}
        reference = spec.get("templateRef")
        if not reference:
            compiled = check_manifest(_flow_document(body)).compiled
            assert compiled is not None  # a Flow document always compiles or raises
            return compiled
        pinned = status.get("template") or {}
        if pinned.get("spec") is not None and pinned.get("name") == reference.get("name") \
                and (decide(status, True) is Recording.RESUME or
                     status.get("specDigest") == runs.spec_digest(spec)):
            compiled = check_manifest(_flow_document(body, pinned["spec"])).compiled
            assert compiled is not None
            return compiled
        template, template_body = await self._template(body)
        expanded = expand(_flow_document(body), template, template_body.get("spec") or {})
        compiled = check_manifest(expanded).compiled
        assert compiled is not None
        tmeta = template_body.get("metadata") or {}
        pin = {"name": reference["name"], "uid": tmeta.get("uid"),
               "generation": tmeta.get("generation"), "spec": template_spec(expanded)}
        meta = body["metadata"]
        if not await self.api.patch_flow_status(meta["namespace"], meta["name"],
                                                {"template": pin}):
            raise FlowNotFound(f"Flow {meta['namespace']}/{meta['name']} is gone")
        return compiled

    async def _template(self, body: Mapping[str, Any]) -> tuple[FlowTemplate, dict[str, Any]]:
        meta = body["metadata"]
        name = body["spec"]["templateRef"]["name"]
        found = await self.api.read_flowtemplate(meta["namespace"], name)
        self._awaiting_template[meta["uid"]] = (name, body)
        if found is None:
            raise TemplateMissing(
                f"spec.templateRef.name: FlowTemplate {meta['namespace']}/{name} does not "
                "exist; create it (the Flow runs once it exists) or fix the name")
        try:
            template = FlowTemplate.model_validate(found)
            check_template(template)
        except (ValidationError, SpecError) as exc:
            raise SpecError(f"Flow {meta['namespace']}/{meta['name']}", "spec.templateRef",
                            f"spec.templateRef: FlowTemplate {meta['namespace']}/{name} is "
                            f"invalid (see its Valid condition); fix it and the Flow runs: "
                            f"{str(exc)[:2000]}") from None
        return template, found

    def awaiting(self, namespace: str, template: str) -> list[Mapping[str, Any]]:
        """The Flows waiting for this FlowTemplate (missing or invalid when they were last
        admitted), as last seen: a change of the template admits them again."""
        return [body for uid, (name, body) in self._awaiting_template.items()
                if name == template and body["metadata"]["namespace"] == namespace
                and (view := self.status.views.get(uid)) is not None and view.valid is False]

    async def observe(self, body: Mapping[str, Any]) -> None:
        """Every event of a Flow: a new generation is reported as observed; a changed spec
        (changePolicy Queue or Restart) starts a new run; a Flow that was invalid is judged
        again. An unchanged re-apply makes no generation, so nothing happens."""
        meta = body["metadata"]
        view = self.status.views.get(meta["uid"])
        generation = meta.get("generation")
        if view is None or generation == view.generation:
            return
        async with self._lock(meta["uid"]):
            previous, view.generation = view.generation, generation
            spec = body.get("spec") or {}
            view.ttl_seconds = spec.get("ttlSecondsAfterFinished")
            try:
                if view.valid is False and view.recorded_at is None:
                    await self._admit(body)
                elif view.spec_digest and view.spec_digest != runs.spec_digest(spec) and \
                        spec.get("changePolicy") in SWITCHING:
                    await self._switch(body, view)
                else:
                    self.status.mark(view.uid)
            except Exception:
                # Not observed: the Flow's next event (its status changes on its own) or the
                # next operator's start tries again.
                view.generation = previous
                raise

    async def _switch(self, body: Mapping[str, Any], view: FlowView) -> None:
        """Start a run of the changed spec (kflow.kube.runs): Restart cancels the running run,
        Queue waits for it to end; a new spec that is invalid leaves the run alone."""
        meta, spec = body["metadata"], body.get("spec") or {}
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        generation = meta.get("generation")
        try:
            await self._compile_unpinned(body)
        except (SpecError, TemplateMissing) as exc:
            message = "\n".join(error_lines(exc)) if isinstance(exc, SpecError) else str(exc)
            self.events.post(FlowEvent(uid, namespace, name, "ChangeRefused",
                                       f"generation {generation} is not run: "
                                       f"{message[:MAX_CONDITION_MESSAGE]}", warning=True))
            self.status.mark(uid)
            return
        flow_id = FlowId.of(namespace, uid)
        reason = "Finished"
        if await self._in_redis(flow_id):
            view.valid = True  # the run in Redis was recorded, so its spec was valid
            snapshot = await self.engine.snapshot(flow_id)
            if snapshot.phase not in TERMINAL_PHASES:
                if not self.routes.knows(uid):
                    # Met at start-up: the running run's spec is no longer in the Flow, so
                    # its nodes' queues are read from Redis; ready nodes go back on them.
                    nodes = await self.engine.graph_nodes(flow_id)
                    self.routes.add(uid, {n.name: n.queue for n in nodes},
                                    {n.queue for n in nodes})
                    await self.engine.reconcile_flow(flow_id)
                    self.dispatchers.kick_namespace(namespace)
                if spec.get("changePolicy") == "Queue":
                    self._queued_body[uid] = body
                    if not view.change_queued:
                        self.events.post(FlowEvent(
                            uid, namespace, name, "ChangeQueued",
                            f"generation {generation} runs once the running run ends",
                            warning=False))
                    view.change_queued = True
                    self.status.mark(uid)
                    return
                await self._cancel(namespace, uid)
                reason = "Restarted"
            await self.status.flush(uid)
        old = {**(body.get("status") or {}), **(view.last_status or {}),
               "runGeneration": view.run_generation, "runs": view.runs}
        # The old run's keys and Jobs go before the status says a new run started, so keys
        # found in Redis after that can only be the new run's (kflow.kube.runs).
        await self.engine.delete(flow_id)  # its exit handlers' flow goes with it
        for job in [*await self.api.flow_jobs(namespace, uid),
                    *await self.api.flow_jobs(namespace, uid + EXIT_SUFFIX)]:
            await self.api.delete_job(namespace, job["metadata"]["name"])
        patch = runs.new_run_status(old, generation, reason)
        if not await self.api.patch_flow_status(namespace, name, patch):
            return
        if view.ttl_task is not None:
            view.ttl_task.cancel()
            view.ttl_task = None
        view.recorded_at, view.last_status, view.phase = None, None, None
        view.change_queued, view.spec_digest, view.expired = False, None, False
        self._queued_body.pop(uid, None)
        view.runs, view.run_generation = patch["runs"], generation
        self.routes.forget(uid)
        self.routes.forget(uid + EXIT_SUFFIX)
        view.exit_snapshot = None
        self.events.post(FlowEvent(
            uid, namespace, name, "RunStarted",
            f"spec generation {generation} runs now; the previous run "
            f"(generation {old.get('runGeneration')}) ended {old.get('phase')}"
            f"{' (restarted)' if reason == 'Restarted' else ''}", warning=False))
        log.info("Flow %s/%s: generation %s starts a new run (%s)", namespace, name,
                 generation, reason)
        status = {**{k: v for k, v in (body.get("status") or {}).items()
                     if k not in runs.RUN_STATUS_FIELDS}, **{k: v for k, v in patch.items()
                                                              if v is not None}}
        await self._admit({**body, "status": status})

    async def _compile_unpinned(self, body: Mapping[str, Any]) -> None:
        """Check a changed spec as a new run would read it (its template as it is now)."""
        spec = body.get("spec") or {}
        if spec.get("templateRef"):
            template, template_body = await self._template(body)
            check_manifest(expand(_flow_document(body), template, template_body.get("spec")))
        else:
            check_manifest(_flow_document(body))

    async def queued_change(self, view: FlowView) -> None:
        """The run a changed spec waited for ended (changePolicy: Queue): run the newest spec
        seen (each new generation's event replaces it)."""
        try:
            async with self._lock(view.uid):
                body = self._queued_body.get(view.uid)
                if view.change_queued and body is not None:
                    await self._switch(body, view)
        except Exception:
            # The next operator's start switches it (the digest still differs).
            log.exception("Flow %s/%s: the queued change could not start", view.namespace,
                          view.name)

    async def _in_redis(self, flow_id: FlowId) -> bool:
        try:
            await self.engine.snapshot(flow_id)
        except FlowNotFound:
            return False
        return True

    async def _mark_recorded(self, view: FlowView, spec: Mapping[str, Any]) -> None:
        """Store `status.recordedAt` (and the digest and generation of the spec the run
        executes) in the Flow; raises (kopf retries the admission) if the API server does not
        take it, so the held graph is released only once it is stored."""
        view.recorded_at = now_rfc3339()
        view.lost_message = None
        view.spec_digest = runs.spec_digest(spec)
        if view.run_generation is None:
            view.run_generation = view.generation
        if not await self.api.patch_flow_status(
                view.namespace, view.name,
                {"recordedAt": view.recorded_at, "specDigest": view.spec_digest,
                 "runGeneration": view.run_generation}):
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
            await self._cancel(meta["namespace"], meta["uid"])
        except FlowNotFound:
            return

    async def _cancel(self, namespace: str, uid: str) -> None:
        await self.engine.cancel(FlowId.of(namespace, uid))
        for job in await self.api.flow_jobs(namespace, uid):
            if job_state(job) == "running":
                await self.api.delete_job(namespace, job["metadata"]["name"])
        self.dispatchers.kick_namespace(namespace)
        self.status.mark(uid)

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
        self.routes.forget(uid + EXIT_SUFFIX)
        self._stalled.forget(FlowId.of(meta["namespace"], uid))
        self._locks.pop(uid, None)
        self._admitted.discard(uid)
        self._awaiting_template.pop(uid, None)
        self._queued_body.pop(uid, None)
        if self.notifier is not None:
            self.notifier.forget(uid)
        self.metrics.forget_flow(uid)
        await self.engine.delete(FlowId.of(meta["namespace"], uid))
        # The garbage collector would remove them after the Flow; do it now, pods included.
        for job in [*await self.api.flow_jobs(meta["namespace"], uid),
                    *await self.api.flow_jobs(meta["namespace"], uid + EXIT_SUFFIX)]:
            await self.api.delete_job(meta["namespace"], job["metadata"]["name"])
        log.info("Flow %s/%s deleted: Redis keys and Jobs removed", meta["namespace"],
                 meta["name"])

    def refresh_missing_queues(self, namespace: str, uid: str | None = None) -> None:
        """Recompute the QueueMissing condition of every flow of the namespace (a Queue came
        or went), or of the one flow `uid` (it was just admitted: looking at every other
        flow again made admitting n flows cost n² steps)."""
        for flow_uid in list(self.status.views) if uid is None else [uid]:
            view = self.status.views.get(flow_uid)
            if view is None or view.namespace != namespace or not self.routes.knows(flow_uid):
                continue
            missing = tuple(sorted(q for q in self.routes.node_queues(flow_uid)
                                   if QueueId(namespace, q) not in self.dispatchers.queues))
            if missing != view.missing_queues:
                view.missing_queues = missing
                self.status.mark(flow_uid)

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

    async def _start_exit(self, view: FlowView) -> None:
        try:
            await self.engine.start_exit(FlowId.of(view.namespace, view.uid))
        except Exception:  # the next start of the operator tries again (reconcile_flow)
            log.exception("Flow %s/%s: starting its exit handlers failed", view.namespace,
                          view.name)
        self.dispatchers.kick_namespace(view.namespace)  # their queues go on
        self.status.mark(view.uid)

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
        if phase in TERMINAL_PHASES and view.change_queued:
            # The run a changed spec waited for has ended: the new run starts instead of the
            # TTL clock (changePolicy: Queue).
            task = asyncio.create_task(self.queued_change(view), name=f"switch {view.uid}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if phase in TERMINAL_PHASES:
            if view.exit_total:
                # A worker pod's step may have ended the flow: the operator starts the exit
                # handlers (idempotent; a step of its own started them already).
                task = asyncio.create_task(self._start_exit(view), name=f"exit {view.uid}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
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
