"""Flow and Queue status: built from the engine's view, bounded in size, patched ~once a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kflow.api.durations import format_duration
from kflow.api.ids import FlowId, QueueId
from kflow.api.models import NodeCounts
from kflow.api.states import TERMINAL_PHASES
from kflow.engine import EXIT_SUFFIX, FlowNotFound, FlowSnapshot
from kflow.kube.metrics import Metrics
from kflow.kube.recording import CONDITION_STATE_LOST
from kflow.store.outage import RedisOutage

log = logging.getLogger("kflow.kube.status")

# While Redis is unreachable, flows waiting for a status patch are tried this often.
OUTAGE_RECHECK_SECONDS = 2.0
# A Queue's status is patched only when it changed, and at most this often.
QUEUE_STATUS_MIN_INTERVAL_SECONDS = 1.0
# The error text of each listed failure is cut to this many characters: status stays bounded.
FAILURE_TEXT_LIMIT = 500


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return rfc3339(int(time.time() * 1000)) or ""


@dataclass
class FlowView:
    """What the operator knows of one Flow beyond Redis: validity, missing queues, last status."""

    uid: str
    namespace: str
    name: str
    generation: int | None = None
    valid: bool | None = None  # None until the spec was checked
    invalid_message: str = ""
    missing_queues: tuple[str, ...] = ()
    ttl_seconds: int | None = None
    phase: str | None = None  # last phase written (from the object at start-up)
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_status: dict[str, Any] | None = None
    last_patch: float = 0.0
    ttl_task: asyncio.Task[None] | None = None
    # When the graph was recorded in Redis (status.recordedAt), kept in every status.
    recorded_at: str | None = None
    # Redis lost a recorded flow before it finished (kflow.kube.recording.Recording.LOST): the
    # status keeps what it said and gets the StateLost condition; nothing is read from Redis.
    lost_message: str | None = None
    # Finished and gone from Redis (Recording.EXPIRED): the status is left exactly as it is.
    expired: bool = False
    # Why the spec is invalid, as the Ready/Stalled reason: InvalidSpec, TemplateNotFound.
    invalid_reason: str = "InvalidSpec"
    # A changed spec waits for the running run to finish (changePolicy: Queue).
    change_queued: bool = False
    # The runs of this Flow object (kflow.kube.runs), as its status says: the digest of the
    # spec the current run executes, its generation, and the earlier runs. Written by the
    # patches that switch and record runs, never by the periodic status patch.
    spec_digest: str | None = None
    run_generation: int | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    # Exit handlers (spec.onExit): how many nodes they have (0: none), and their flow's last
    # snapshot (None until the flow ended and they started).
    exit_total: int = 0
    exit_snapshot: FlowSnapshot | None = None


def _condition(view: FlowView, ctype: str, status: bool, reason: str,
               message: str) -> dict[str, Any]:
    text = "True" if status else "False"
    previous = view.conditions.get(ctype)
    since = previous.get("lastTransitionTime") if previous and previous.get("status") == text \
        else now_rfc3339()
    return {"type": ctype, "status": text, "reason": reason, "message": message,
            "lastTransitionTime": since}


# The conditions GitOps tools read (Flux's kstatus, and the Argo CD health check kflow ships):
# Ready once the run succeeded, Reconciling while it is on its way, Stalled when only a person
# can move it on. The other conditions (Valid, Complete, Failed...) stay for kubectl wait.
GITOPS_CONDITIONS = ("Ready", "Reconciling", "Stalled")


def gitops_conditions(view: FlowView, phase: str, *, stalled: str | None = None,
                      message: str = "") -> list[dict[str, Any]]:
    """Ready, Reconciling and Stalled for a flow in `phase`; `stalled`: the reason it cannot
    go on (InvalidSpec, TemplateNotFound, StateLost), overriding the phase."""
    if stalled is None and phase == "Failed":
        stalled = "FlowFailed"
    elif stalled is None and phase == "Cancelled":
        stalled = "Cancelled"
    reconciling = stalled is None and phase in ("Pending", "Running")
    reconciling_reason = "ChangeQueued" if view.change_queued and reconciling else phase
    if view.change_queued and phase in TERMINAL_PHASES:
        reconciling, reconciling_reason, stalled = True, "ChangeQueued", None
    ready_reason = stalled if stalled in ("InvalidSpec", "TemplateNotFound", "StateLost") \
        else phase
    return [
        _condition(view, "Ready", phase == "Succeeded" and stalled is None and
                   not view.change_queued, ready_reason or "Pending", message),
        _condition(view, "Reconciling", reconciling, reconciling_reason or "Pending",
                   "a changed spec runs once this run finishes" if reconciling_reason ==
                   "ChangeQueued" else message if reconciling else ""),
        _condition(view, "Stalled", stalled is not None, stalled or phase or "Pending",
                   message if stalled else ""),
    ]


def build_lost_status(view: FlowView) -> dict[str, Any]:
    """A flow whose Redis state is gone: its conditions as they were, plus StateLost."""
    conditions = [c for t, c in view.conditions.items()
                  if t != CONDITION_STATE_LOST and t not in GITOPS_CONDITIONS]
    conditions.append(_condition(view, CONDITION_STATE_LOST, True, "RedisStateLost",
                                 view.lost_message or ""))
    conditions.extend(gitops_conditions(view, view.phase or "Pending", stalled="StateLost",
                                        message=view.lost_message or ""))
    return {"observedGeneration": view.generation, "conditions": conditions}


def build_status(view: FlowView, snapshot: FlowSnapshot | None,
                 max_failures: int) -> dict[str, Any]:
    """The Flow's status: a few counters and conditions, whatever the flow's size."""
    if view.lost_message is not None:
        return build_lost_status(view)
    conditions: list[dict[str, Any]] = []
    status: dict[str, Any] = {"observedGeneration": view.generation}
    if view.recorded_at:
        status["recordedAt"] = view.recorded_at
    if view.valid is False or snapshot is None:
        # A Flow waiting for its FlowTemplate is not failed: it runs once the template
        # exists, so it stays Pending (Stalled says why) and nothing gives up on it.
        waiting = view.valid is False and view.invalid_reason == "TemplateNotFound"
        phase = "Failed" if view.valid is False and not waiting else "Pending"
        conditions.append(_condition(view, "Valid", view.valid is not False,
                                     "Invalid" if view.valid is False else "Checking",
                                     view.invalid_message))
        conditions.append(_condition(view, "Complete", False, phase, ""))
        failed_reason = "TemplateNotFound" if waiting else \
            "Invalid" if view.valid is False else phase
        conditions.append(_condition(view, "Failed", view.valid is False and not waiting,
                                     failed_reason, view.invalid_message))
        conditions.extend(gitops_conditions(
            view, "Pending", stalled=view.invalid_reason if view.valid is False else None,
            message=view.invalid_message if view.valid is False else "recording the graph"))
        status.update(phase=phase, progress="0/0", conditions=conditions)
        return status

    phase = snapshot.phase
    status.update(
        phase=phase,
        progress=f"{snapshot.done}/{snapshot.total}",
        total=snapshot.total,
        # Every state, zeros included (the api model's fields): the status is a merge patch,
        # so a state left out would keep its last value and the counts would stop adding up.
        counts=NodeCounts.from_states(snapshot.counts).model_dump(by_alias=True),
    )
    if snapshot.started_at_ms is not None:
        status["startedAt"] = rfc3339(snapshot.started_at_ms)
        end_ms = snapshot.finished_at_ms or int(time.time() * 1000)
        status["duration"] = format_duration(max(0, end_ms - snapshot.started_at_ms) // 1000
                                             * 1000)
    if snapshot.finished_at_ms is not None:
        status["finishedAt"] = rfc3339(snapshot.finished_at_ms)
    failures: list[dict[str, Any]] = [
        {"node": f.node, "attempt": max(1, f.attempt), "error": f.error[:FAILURE_TEXT_LIMIT]}
        for f in snapshot.failures[:max_failures]
    ]
    status["firstFailures"] = failures

    conditions.append(_condition(view, "Valid", True, "Compiled",
                                 f"{snapshot.total} nodes in the graph"))
    conditions.append(_condition(view, "Complete", phase == "Succeeded", phase,
                                 "every root node succeeded" if phase == "Succeeded" else ""))
    failed_msg = ""
    if phase == "Failed" and failures:
        first = failures[0]
        failed_msg = f'node "{first["node"]}" failed: {first["error"][:200]}'
    conditions.append(_condition(view, "Failed", phase in {"Failed", "Cancelled"}, phase,
                                 failed_msg or ("cancelled" if phase == "Cancelled" else "")))
    if view.missing_queues and phase not in TERMINAL_PHASES:
        names = ", ".join(view.missing_queues)
        conditions.append(_condition(
            view, "QueueMissing", True, "QueueMissing",
            f"QueueMissing: {names} (nodes of these queues wait until a Queue of that name "
            f"exists in namespace {view.namespace} and is served; a Queue that is invalid or "
            "breaks the pod policy is not: see its Valid condition)"))
    elif "QueueMissing" in view.conditions:
        conditions.append(_condition(view, "QueueMissing", False, "QueuesPresent", ""))
    if CONDITION_STATE_LOST in view.conditions:  # started over after its state was lost
        conditions.append(_condition(view, CONDITION_STATE_LOST, False, "Recorded",
                                     "recorded again on request"))
    progress = f"{snapshot.done}/{snapshot.total} nodes finished"
    conditions.extend(gitops_conditions(
        view, phase, message=failed_msg or ("cancelled" if phase == "Cancelled" else progress)))
    status["conditions"] = conditions
    if view.exit_total:
        status["exitHandlers"] = exit_handlers_status(view, max_failures)
    return status


def exit_handlers_status(view: FlowView, max_failures: int) -> dict[str, Any]:
    """`status.exitHandlers`: their phase, progress and first failures (Pending until the
    flow ends). Reported beside the flow's own outcome, never folded into it."""
    snapshot = view.exit_snapshot
    if snapshot is None:
        return {"phase": "Pending", "progress": f"0/{view.exit_total}", "failures": []}
    return {"phase": str(snapshot.phase), "progress": f"{snapshot.done}/{snapshot.total}",
            "failures": [{"node": f.node, "attempt": max(1, f.attempt),
                          "error": f.error[:FAILURE_TEXT_LIMIT]}
                         for f in snapshot.failures[:max_failures]]}


class StatusMarks(Protocol):
    """Asks for a Flow's status to be refreshed soon (StatusPatcher does it, coalesced)."""

    def mark(self, uid: str) -> None: ...


PatchFn = Callable[[str, str, dict[str, Any]], Awaitable[bool]]
SnapshotFn = Callable[[FlowId], Awaitable[FlowSnapshot]]
FinishedFn = Callable[[FlowView, str], None]


class StatusPatcher:
    """Coalesces status updates: many marks of one flow become one patch per interval."""

    def __init__(self, *, patch: PatchFn, snapshot: SnapshotFn, on_phase_change: FinishedFn,
                 interval: float = 1.0, max_failures: int = 10, parallel: int = 8,
                 outage: RedisOutage | None = None) -> None:
        self._patch = patch
        # Shared with the dispatch and pool loops: an outage is logged once, not per flow.
        self.outage = outage or RedisOutage()
        self._snapshot = snapshot
        self._on_phase_change = on_phase_change
        self._interval = interval
        self._max_failures = max_failures
        self._parallel = parallel
        self.views: dict[str, FlowView] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        # One patch of a flow at a time: a patch built from an older snapshot must not land
        # after a newer one (a flow admitted held, then resumed, stayed Suspended).
        self._patching: dict[str, asyncio.Lock] = {}

    def track(self, view: FlowView) -> FlowView:
        """Start tracking a flow (or refresh what is known of it); returns the live view."""
        current = self.views.get(view.uid)
        if current is None:
            self.views[view.uid] = view
            return view
        current.generation = view.generation
        current.valid = view.valid
        current.invalid_message = view.invalid_message
        current.ttl_seconds = view.ttl_seconds
        return current

    def forget(self, uid: str) -> None:
        view = self.views.pop(uid, None)
        self._dirty.discard(uid)
        self._patching.pop(uid, None)
        if view and view.ttl_task:
            view.ttl_task.cancel()

    def mark(self, uid: str) -> None:
        """Ask for a status patch of this flow soon (coalesced); an exit flow's mark
        (`<uid>.exit`) is its Flow's."""
        uid = uid.removesuffix(EXIT_SUFFIX)
        if uid in self.views:
            self._dirty.add(uid)
            self._wake.set()

    async def run(self) -> None:
        """Patch dirty flows forever, each at most once per interval."""
        while True:
            self._wake.clear()
            now = time.monotonic()
            due = [uid for uid in self._dirty
                   if now - self.views[uid].last_patch >= self._interval]
            for start in range(0, len(due), self._parallel):
                chunk = due[start:start + self._parallel]
                for uid in chunk:
                    self._dirty.discard(uid)
                await asyncio.gather(*(self._patch_one(uid) for uid in chunk))
            waiting = [self.views[uid].last_patch + self._interval - time.monotonic()
                       for uid in self._dirty if uid in self.views]
            self._dirty &= set(self.views)
            timeout = max(0.01, min(waiting)) if waiting else None
            if self.outage.down and self._dirty:
                # Redis is away: look again every few seconds, not every interval.
                timeout = max(timeout or 0.0, OUTAGE_RECHECK_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def flush(self, uid: str) -> None:
        """Patch one flow now (used right after validation, when the user is waiting)."""
        self._dirty.discard(uid)
        await self._patch_one(uid)

    async def _patch_one(self, uid: str) -> None:
        lock = self._patching.get(uid)
        if lock is None:
            lock = self._patching[uid] = asyncio.Lock()
        async with lock:  # the snapshot is read inside: each patch is newer than the last
            await self._read_and_patch(uid)

    async def _read_and_patch(self, uid: str) -> None:
        view = self.views.get(uid)
        if view is None or view.expired:
            return
        view.last_patch = time.monotonic()
        try:
            reads = view.valid and view.lost_message is None
            snapshot = await self._snapshot(FlowId.of(view.namespace, uid)) if reads else None
            if reads:
                self.outage.succeeded()
            status = build_status(view, snapshot, self._max_failures)
            if status != view.last_status:
                if not await self._patch(view.namespace, view.name, status):
                    self.forget(uid)
                    return
                view.last_status = status
                view.conditions = {c["type"]: c for c in status.get("conditions", [])}
            phase = status.get("phase")
            if phase and phase != view.phase:
                previous, view.phase = view.phase, phase
                if previous is not None or phase in TERMINAL_PHASES:
                    self._on_phase_change(view, previous or "")
        except FlowNotFound:
            self.outage.succeeded()  # Redis answered: it has no such flow
            # Expired after its TTL or deleted: nothing left to report (the TTL task or the
            # finalizer takes care of the object).
            log.debug("Flow %s/%s has no keys in Redis; status left as is", view.namespace,
                      view.name)
        except Exception as exc:  # one flow's trouble must not stop the others' status
            if self.outage.failed(exc, f"status of Flow {view.namespace}/{view.name}") is None:
                log.exception("status patch of Flow %s/%s failed; will retry",
                              view.namespace, view.name)
            self._dirty.add(uid)


class QueueStatusApi(Protocol):
    """The call QueueStatus makes (kflow.kube.k8s.KubeApi has it)."""

    async def patch_queue_status(self, namespace: str, name: str,
                                 status: dict[str, Any]) -> None: ...


class QueueStatus:
    """A Queue's depth in its status and in the metrics; patched on change, at most 1/s. And
    its Valid condition (the pod policy's verdict), patched when it changes."""

    def __init__(self, api: QueueStatusApi, metrics: Metrics) -> None:
        self.api = api
        self.metrics = metrics
        self._last: dict[str, tuple[dict[str, Any], float]] = {}  # as last written, and when
        self._valid: dict[str, dict[str, Any]] = {}  # the Valid condition as last written
        self._generation: dict[str, int] = {}  # the spec generation it was written for
        # A depth that came too soon after the last patch, and the task that writes it once
        # the interval is over: the last change is never dropped, even when no report follows.
        self._pending: dict[str, dict[str, Any]] = {}
        self._flushing: dict[str, asyncio.Task[None]] = {}

    async def set_valid(self, queue_id: QueueId, valid: bool, reason: str,
                        message: str, generation: int | None = None) -> bool:
        """Write the Queue's Valid condition (with the spec generation it judged, when
        known); True when the verdict changed (False: already so).

        Known only from this process's own writes: after a restart the first verdict is
        written again (its lastTransitionTime is then the restart's).
        """
        text = "True" if valid else "False"
        previous = self._valid.get(queue_id)
        if previous is not None and (previous["status"], previous["reason"],
                                     previous["message"]) == (text, reason, message):
            if generation is not None and generation != self._generation.get(queue_id):
                namespace, _, name = queue_id.partition("/")
                await self.api.patch_queue_status(namespace, name,
                                                  {"observedGeneration": generation})
                self._generation[queue_id] = generation
            return False
        since = previous["lastTransitionTime"] if previous and previous["status"] == text \
            else now_rfc3339()
        condition = {"type": "Valid", "status": text, "reason": reason,
                     "message": message, "lastTransitionTime": since}
        # Ready and Stalled follow Valid (the kstatus convention GitOps tools read): a Queue
        # that is served is ready; one refused stays so until its spec or the policy changes.
        ready = {**condition, "type": "Ready"}
        stalled = {**condition, "type": "Stalled", "status": "False" if valid else "True",
                   "message": "" if valid else message}
        namespace, _, name = queue_id.partition("/")
        status: dict[str, Any] = {"conditions": [condition, ready, stalled]}
        if generation is not None:
            status["observedGeneration"] = generation
            self._generation[queue_id] = generation
        await self.api.patch_queue_status(namespace, name, status)
        self._valid[queue_id] = condition
        return True

    async def report(self, queue_id: QueueId, ready: int, active: int, delayed: int,
                     workers: int | None = None) -> None:
        self.metrics.queue_depth(queue_id, ready, active, delayed)
        status = {"waiting": ready, "active": active, "delayed": delayed}
        if workers is not None:
            status["workers"] = workers
        last, at = self._last.get(queue_id, ({}, -1e9))
        if status == last:
            self._pending.pop(queue_id, None)
            return
        wait = QUEUE_STATUS_MIN_INTERVAL_SECONDS - (time.monotonic() - at)
        if wait > 0:
            self._pending[queue_id] = status
            if queue_id not in self._flushing:
                self._flushing[queue_id] = asyncio.create_task(
                    self._write_later(queue_id, wait), name=f"queue status {queue_id}")
            return
        self._pending.pop(queue_id, None)
        await self._write(queue_id, status)

    async def _write(self, queue_id: QueueId, status: dict[str, Any]) -> None:
        namespace, _, name = queue_id.partition("/")
        await self.api.patch_queue_status(namespace, name, status)
        self._last[queue_id] = (status, time.monotonic())  # only once written

    async def _write_later(self, queue_id: QueueId, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            status = self._pending.pop(queue_id, None)
            if status is not None:
                await self._write(queue_id, status)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next report writes it again
            log.exception("status patch of Queue %s failed", queue_id)
        finally:
            self._flushing.pop(queue_id, None)

    def forget(self, queue_id: QueueId) -> None:
        self._last.pop(queue_id, None)
        self._valid.pop(queue_id, None)
        self._generation.pop(queue_id, None)
        self._pending.pop(queue_id, None)
        task = self._flushing.pop(queue_id, None)
        if task is not None:
            task.cancel()
