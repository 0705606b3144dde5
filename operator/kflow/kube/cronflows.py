"""CronFlow objects in the operator: one loop per CronFlow starts its Flows on schedule,
applies its concurrency policy and history limits, and writes its status and Events.

The decisions are kflow.kube.cronplan's; this module reads the cluster, acts and reports.
Replace deletes the unfinished runs (as CronJob deletes its Jobs): their Flows' finalizer
stops their pods and drops their state, and the new run starts at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from kflow.api.cron import (
    ANNOTATION_SCHEDULED_AT,
    LABEL_CRONFLOW,
    CronFlow,
    Schedule,
    parse_cronflow,
)
from kflow.api.errors import SpecError, error_lines
from kflow.api.models import API_VERSION, MAX_CONDITION_MESSAGE
from kflow.graph import check_manifest
from kflow.kube.cronplan import (
    MAX_MISSED,
    Plan,
    Run,
    expired,
    parse_time,
    plan,
    run_name,
    run_of,
)
from kflow.kube.dispatch import wait_any
from kflow.kube.events import EventPoster

log = logging.getLogger("kflow.kube")

# Reasons of the conditions and Events (the contract of issue 13).
REASON_SCHEDULED = "Scheduled"
REASON_SUSPENDED = "Suspended"
REASON_INVALID_SCHEDULE = "InvalidSchedule"
REASON_INVALID_SPEC = "InvalidSpec"
EVENT_MISSED = "MissedSchedule"
EVENT_TOO_MANY_MISSED = "TooManyMissedSchedules"
EVENT_SKIPPED_FORBID = "SkippedForbid"
EVENT_REPLACED = "Replaced"
EVENT_DELETED = "DeletedFinished"
# A loop wakes at least this often (seconds of real time) even if nothing woke it: a lost
# watch event then costs at most this much delay.
MAX_SLEEP_S = 60.0
# Changes of a CronFlow's Flows (each status patch of a running one) wake its loop; the loop
# waits this long (real seconds) after a wake-up, so a burst of them costs one list call.
COALESCE_S = 0.5
RETRY_S = 5.0
_SCHEDULE_FIELDS = ("spec.schedule", "spec.timeZone")


class CronClock:
    """The time a CronFlow's schedule is read at: the wall clock, or (`scale` > 1, a testing
    knob: KFLOW_CRON_TIME_SCALE) a clock that runs `scale` times faster from the moment it is
    made, so that "every minute" comes every 60/scale real seconds."""

    def __init__(self, scale: float = 1.0, wall: Callable[[], float] = time.time) -> None:
        if scale <= 0:
            raise ValueError(f"the cron time scale must be above 0, not {scale}")
        self.scale = scale
        self._wall = wall
        self._origin = wall()

    def now(self) -> datetime:
        return self.at(self._wall())

    def at(self, real: float) -> datetime:
        """The time this clock showed (or will show) at the real time `real` (Unix seconds):
        a CronFlow's creationTimestamp is mapped through it."""
        return datetime.fromtimestamp(self._origin + (real - self._origin) * self.scale, UTC)

    def real_seconds(self, seconds: float) -> float:
        """How long `seconds` of this clock take in real time."""
        return seconds / self.scale


class CronApi(Protocol):
    """The Kubernetes calls a CronFlow's loop makes (kflow.kube.k8s.KubeApi has them)."""

    async def list_cronflow_flows(self, namespace: str, cronflow: str) -> list[dict[str, Any]]:
        ...

    async def create_flow(self, namespace: str, body: dict[str, Any]) -> bool: ...

    async def delete_flow(self, namespace: str, name: str) -> None: ...

    async def patch_cronflow_status(self, namespace: str, name: str,
                                    status: dict[str, Any]) -> bool: ...


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def run_flow(cronflow: Mapping[str, Any], slot: datetime) -> dict[str, Any]:
    """The Flow of one scheduled time: the CronFlow's `spec.flow` with kflow's name, label,
    annotation and owner (the contract of issue 13)."""
    meta = cronflow["metadata"]
    template = cronflow["spec"]["flow"]
    wanted = template.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": "Flow",
        "metadata": {
            "name": run_name(meta["name"], slot),
            "namespace": meta["namespace"],
            "labels": {**(wanted.get("labels") or {}), LABEL_CRONFLOW: meta["name"]},
            "annotations": {**(wanted.get("annotations") or {}),
                            ANNOTATION_SCHEDULED_AT: rfc3339(slot)},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "CronFlow",
                                 "name": meta["name"], "uid": meta.get("uid"), "controller": True}],
        },
        "spec": template["spec"],
    }


def _condition(previous: Mapping[str, Any], ctype: str, status: bool, reason: str,
               message: str, generation: int | None, now: datetime) -> dict[str, Any]:
    text = "True" if status else "False"
    old = previous.get(ctype) or {}
    since = old.get("lastTransitionTime") if old.get("status") == text else rfc3339(now)
    return {"type": ctype, "status": text, "reason": reason,
            "message": message[:MAX_CONDITION_MESSAGE], "lastTransitionTime": since,
            "observedGeneration": generation}


def conditions(previous: list[dict[str, Any]], *, problem: tuple[str, str] | None,
               suspended: bool, next_slot: datetime | None, generation: int | None,
               now: datetime) -> list[dict[str, Any]]:
    """Ready, Stalled and Reconciling. Suspended keeps Ready True (a steady state, kstatus
    Current); a spec that cannot run is Ready False and Stalled True with the reason."""
    old = {str(c.get("type")): c for c in previous if isinstance(c, Mapping)}
    if problem is not None:
        reason, message = problem
        ready = _condition(old, "Ready", False, reason, message, generation, now)
        stalled = _condition(old, "Stalled", True, reason, message, generation, now)
    else:
        if suspended:
            ready = _condition(old, "Ready", True, REASON_SUSPENDED,
                               "suspended: no new runs start until spec.suspend is false",
                               generation, now)
        else:
            ready = _condition(old, "Ready", True, REASON_SCHEDULED,
                               f"next run at {rfc3339(next_slot)}", generation, now)
        stalled = _condition(old, "Stalled", False, ready["reason"], "", generation, now)
    reconciling = _condition(old, "Reconciling", False, ready["reason"], "", generation, now)
    return [ready, stalled, reconciling]


Verdict = tuple[tuple[str, str] | None, CronFlow | None]


def judge(cronflow: Mapping[str, Any]) -> Verdict:
    """((reason, message) of a CronFlow that cannot run, or None; the parsed CronFlow when it
    can). Its schedule, time zone and fields, then the Flow it starts, compiled as `kflow
    lint` compiles a Flow. The operator's Stalled condition and the admission webhook say
    the same."""
    meta = cronflow.get("metadata") or {}
    document = {"apiVersion": cronflow.get("apiVersion", API_VERSION), "kind": "CronFlow",
                "metadata": {k: meta[k] for k in ("name", "namespace") if meta.get(k)},
                "spec": cronflow.get("spec")}
    try:
        parsed = parse_cronflow(document)
    except SpecError as exc:
        fields = {error.field for error in exc.errors}
        reason = REASON_INVALID_SCHEDULE if fields <= set(_SCHEDULE_FIELDS) \
            else REASON_INVALID_SPEC
        return (reason, "\n".join(error_lines(exc))), None
    flow = run_flow({"metadata": {"name": meta.get("name") or "cronflow",
                                  "namespace": meta.get("namespace") or "default",
                                  "uid": meta.get("uid")},
                     "spec": document["spec"]}, datetime(2000, 1, 1, tzinfo=UTC))
    try:
        check_manifest(flow)
    except SpecError as exc:
        lines = "\n".join(f"spec.flow: {line}" for line in error_lines(exc))
        return (REASON_INVALID_SPEC, f"{parsed.object_ref}: spec.flow is not a Flow kflow "
                f"can run; fix these:\n{lines}"), None
    return None, parsed


class CronFlowControl:
    """`run`: the loop of one CronFlow (kopf's daemon); `changed`: wake it."""

    def __init__(self, api: CronApi, events: EventPoster | None, clock: CronClock) -> None:
        self.api = api
        self.events = events
        self.clock = clock
        self._wake: dict[tuple[str, str], asyncio.Event] = {}
        # (cronflow, reason, what) of Events posted, so a held or skipped time is told once.
        self._told: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._checked: dict[tuple[str, str], tuple[Any, Verdict]] = {}

    def changed(self, namespace: str, name: str) -> None:
        """The CronFlow or one of its Flows changed: its loop looks again soon."""
        wake = self._wake.get((namespace, name))
        if wake is not None:
            wake.set()

    async def run(self, body: Mapping[str, Any], stopped: Any) -> None:
        """Schedule one CronFlow until `stopped` (a kopf daemon flag); `body` is kopf's live
        view of the object, so each pass reads its newest spec."""
        key = (str(body["metadata"]["namespace"]), str(body["metadata"]["name"]))
        wake = self._wake.setdefault(key, asyncio.Event())
        try:
            while not stopped:
                wake.clear()
                try:
                    wait = await self.reconcile(_plain(body))
                except Exception as exc:  # the API server or a patch failed: try again soon
                    log.warning("CronFlow %s/%s: %s; trying again in %ss", *key, exc, RETRY_S)
                    wait = None
                    real = RETRY_S
                else:
                    real = MAX_SLEEP_S if wait is None else self.clock.real_seconds(wait)
                await wait_any(wake, stopped, max(0.05, min(real, MAX_SLEEP_S)))
                if wake.is_set():
                    await wait_any(asyncio.Event(), stopped, COALESCE_S)
        finally:
            self._wake.pop(key, None)
            self._told.pop(key, None)
            self._checked.pop(key, None)

    async def reconcile(self, cronflow: dict[str, Any]) -> float | None:
        """One pass: start what is due, apply the policy and history limits, write the status.
        Returns the seconds (of the clock) until the next scheduled time, None when none."""
        meta = cronflow["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        status = cronflow.get("status") or {}
        now = self.clock.now()
        problem, parsed = self._judge(key, cronflow)
        runs = [run_of(flow) for flow in await self.api.list_cronflow_flows(*key)]
        decided = Plan()
        last_schedule = parse_time(status.get("lastScheduleTime"))
        if parsed is not None:
            spec = parsed.spec
            created = parse_time(meta.get("creationTimestamp"))
            earliest = last_schedule or (
                self.clock.at(created.timestamp()) if created is not None else now)
            decided = plan(Schedule.of(spec), policy=spec.concurrency_policy,
                           deadline_seconds=spec.starting_deadline_seconds,
                           suspend=spec.suspend, earliest=earliest, now=now, runs=runs)
            self._tell_skipped(cronflow, decided)
            for replaced in decided.delete:
                await self.api.delete_flow(key[0], replaced.name)
                self._post(cronflow, EVENT_REPLACED, f"deleted unfinished Flow {replaced.name} "
                           "(concurrencyPolicy Replace)", warning=False)
            runs = [run for run in runs if run not in decided.delete]
            if decided.start is not None:
                runs.append(await self._start(cronflow, decided.start))
                last_schedule = decided.start
            for old in expired(runs, succeeded_limit=spec.successful_flows_history_limit,
                               failed_limit=spec.failed_flows_history_limit):
                await self.api.delete_flow(key[0], old.name)
                runs.remove(old)
                log.info("CronFlow %s/%s: deleted finished Flow %s (history limit)", *key,
                         old.name)
        await self._write_status(cronflow, runs, decided, problem, last_schedule, now)
        if decided.next_slot is None:
            return None
        return max(0.0, (decided.next_slot - now).total_seconds())

    def _judge(self, key: tuple[str, str], cronflow: Mapping[str, Any]
               ) -> tuple[tuple[str, str] | None, CronFlow | None]:
        """(reason, message) of a spec that cannot run, else None; and the parsed CronFlow.
        Judged once per generation (the Flow it holds is compiled, as `kflow lint` does)."""
        generation = cronflow["metadata"].get("generation")
        cached = self._checked.get(key)
        if cached is None or cached[0] != generation:
            self._checked[key] = cached = (generation, judge(cronflow))
        problem, parsed = cached[1]
        return problem, parsed

    async def _start(self, cronflow: Mapping[str, Any], slot: datetime) -> Run:
        body = run_flow(cronflow, slot)
        name = body["metadata"]["name"]
        namespace = body["metadata"]["namespace"]
        created = await self.api.create_flow(namespace, body)
        if created:
            log.info("CronFlow %s/%s: started Flow %s for %s", namespace,
                     cronflow["metadata"]["name"], name, rfc3339(slot))
            self._post(cronflow, REASON_SCHEDULED,
                       f"started Flow {name} for the scheduled time {rfc3339(slot)}",
                       warning=False)
        # Not created: an operator before a restart started this time already (the name is
        # the time's), so it is not started twice.
        return Run(name=name, uid=None, phase=None, scheduled_at=slot)

    def _tell_skipped(self, cronflow: Mapping[str, Any], decided: Plan) -> None:
        if decided.start is not None and decided.missed > MAX_MISSED:
            self._post_once(cronflow, EVENT_TOO_MANY_MISSED, rfc3339(decided.start) or "",
                            f"more than {MAX_MISSED} scheduled times were missed (was the "
                            "operator down?); starting only the latest, "
                            f"{rfc3339(decided.start)}; set startingDeadlineSeconds to bound "
                            "how far back a time may start", warning=True)
        elif decided.start is not None and decided.missed > 1:
            self._post_once(cronflow, EVENT_MISSED, rfc3339(decided.start) or "",
                            f"{decided.missed - 1} scheduled time(s) were missed; starting "
                            f"only the latest, {rfc3339(decided.start)}", warning=True)
        if decided.beyond_deadline is not None:
            self._post_once(cronflow, EVENT_MISSED, rfc3339(decided.beyond_deadline) or "",
                            f"the scheduled time {rfc3339(decided.beyond_deadline)} was not "
                            "started within startingDeadlineSeconds; skipped", warning=True)
        if decided.forbidden is not None:
            self._post_once(cronflow, EVENT_SKIPPED_FORBID, rfc3339(decided.forbidden) or "",
                            f"the scheduled time {rfc3339(decided.forbidden)} waits: a run "
                            "has not finished (concurrencyPolicy Forbid)", warning=False)

    def _post_once(self, cronflow: Mapping[str, Any], reason: str, what: str, message: str, *,
                   warning: bool) -> None:
        meta = cronflow["metadata"]
        told = self._told.setdefault((meta["namespace"], meta["name"]), set())
        if (reason, what) in told:
            return
        if len(told) > 256:
            told.clear()
        told.add((reason, what))
        self._post(cronflow, reason, message, warning=warning)

    def _post(self, cronflow: Mapping[str, Any], reason: str, message: str, *,
              warning: bool) -> None:
        if self.events is None:
            return
        meta = cronflow["metadata"]
        involved = {"apiVersion": API_VERSION, "kind": "CronFlow", "name": meta["name"],
                    "namespace": meta["namespace"], "uid": meta.get("uid")}
        self.events.post_on(involved, reason=reason, message=message, warning=warning)

    async def _write_status(self, cronflow: Mapping[str, Any], runs: list[Run],
                            decided: Plan, problem: tuple[str, str] | None,
                            last_schedule: datetime | None, now: datetime) -> None:
        meta = cronflow["metadata"]
        current = cronflow.get("status") or {}
        generation = meta.get("generation")
        suspended = bool((cronflow.get("spec") or {}).get("suspend"))
        ordered = sorted(runs, key=lambda run: (run.scheduled_at, run.name))
        succeeded = [run.finished_at for run in ordered if run.succeeded and run.finished_at]
        last_success = max([t for t in (*succeeded, parse_time(
            current.get("lastSuccessfulTime"))) if t is not None], default=None)
        newest = ordered[-1] if ordered else None
        if problem is not None:
            self._post_once(cronflow, problem[0], str(generation), problem[1], warning=True)
        wanted: dict[str, Any] = {
            "active": [{"name": run.name, "uid": run.uid} if run.uid else {"name": run.name}
                       for run in ordered if not run.finished],
            "lastScheduleTime": rfc3339(last_schedule),
            "lastSuccessfulTime": rfc3339(last_success),
            "nextScheduleTime": rfc3339(decided.next_slot),
            "lastFlow": None if newest is None else {
                "name": newest.name,
                "phase": newest.phase or ("Failed" if newest.finished else "Pending")},
            "observedGeneration": generation,
            "conditions": conditions(current.get("conditions") or [], problem=problem,
                                     suspended=suspended, next_slot=decided.next_slot,
                                     generation=generation, now=now),
        }
        patch = {key: value for key, value in wanted.items() if current.get(key) != value}
        if patch:
            await self.api.patch_cronflow_status(meta["namespace"], meta["name"], patch)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of kopf's live body (it changes under a pass otherwise)."""
    def copy(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): copy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value
    result: dict[str, Any] = copy(body)
    return result

