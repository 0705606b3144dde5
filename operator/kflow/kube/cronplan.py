"""A CronFlow's decisions, pure: which scheduled time is due, what overlapping runs become,
which finished runs are deleted. kflow.kube.cronflows acts on them.

The rules are Kubernetes CronJob's (pkg/controller/cronjob): after an outage only the most
recent missed time runs; more than MAX_MISSED missed times are reported, not started; a time
older than startingDeadlineSeconds is skipped; Forbid leaves a due time due while a run is
unfinished (so it starts when that run ends, if still within the deadline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kflow.api.cron import ANNOTATION_SCHEDULED_AT, ConcurrencyPolicy, Schedule
from kflow.api.states import TERMINAL_PHASES, FlowPhase

# Missed scheduled times counted after an outage before the count stops; more than this and
# the CronFlow gets a Warning (Kubernetes CronJob's figure), and still only the latest runs.
MAX_MISSED = 100

# A Flow that will never run (invalid spec, lost state) is finished for its CronFlow: it must
# not hold back a Forbid schedule forever. Conditions that say so, by type.
_ENDED_BY_CONDITION = {"Valid": "False", "Stalled": "True", "StateLost": "True"}


@dataclass(frozen=True)
class Run:
    """One Flow of a CronFlow, as far as scheduling cares."""

    name: str
    uid: str | None
    phase: str | None  # the Flow's status.phase; None before the operator saw it
    scheduled_at: datetime
    finished_at: datetime | None = None
    ended: bool = False  # finished, by phase or by a condition that says it never will run
    deleting: bool = False  # being deleted: its finalizer stops its pods

    @property
    def finished(self) -> bool:
        # A run being deleted (Replace, a history limit, a person) is finished for its
        # CronFlow: a Forbid schedule must not wait for its finalizer.
        return self.ended or self.deleting or self.phase in TERMINAL_PHASES

    @property
    def succeeded(self) -> bool:
        return self.phase == FlowPhase.SUCCEEDED


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 time as Kubernetes writes it (`...Z`); None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def run_of(flow: Mapping[str, Any]) -> Run:
    """The Run of a Flow object (a dict as the API server returns it)."""
    meta = flow.get("metadata") or {}
    status = flow.get("status") or {}
    scheduled = parse_time((meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_AT))
    created = parse_time(meta.get("creationTimestamp"))
    ended = any(
        condition.get("type") in _ENDED_BY_CONDITION
        and condition.get("status") == _ENDED_BY_CONDITION[condition["type"]]
        for condition in status.get("conditions") or []
    )
    phase = status.get("phase")
    return Run(
        name=str(meta.get("name")),
        uid=meta.get("uid"),
        phase=phase if isinstance(phase, str) else None,
        scheduled_at=scheduled or created or datetime.min.replace(tzinfo=UTC),
        finished_at=parse_time(status.get("finishedAt")),
        ended=ended,
        deleting=bool(meta.get("deletionTimestamp")),
    )


@dataclass(frozen=True)
class Due:
    """The scheduled times between the last one started and now."""

    slot: datetime | None  # the most recent due time, or None when none is due
    missed: int  # due times found (slot included), counted up to MAX_MISSED + 1
    next_slot: datetime  # the first time after now
    beyond_deadline: datetime | None = None  # the latest time skipped as too old


def due(schedule: Schedule, *, earliest: datetime, now: datetime,
        deadline_seconds: int | None) -> Due:
    """Which scheduled time should start now, given the last one started (or the CronFlow's
    creation) at `earliest`."""
    next_slot = schedule.next_after(now)
    beyond: datetime | None = None
    if deadline_seconds is not None:
        window_start = now - timedelta(seconds=deadline_seconds)
        if window_start > earliest:
            first = schedule.next_after(earliest)
            if first <= window_start:
                beyond = schedule.latest_at_or_before(window_start)
            earliest = window_start
    missed = 0
    slot = schedule.next_after(earliest)
    latest: datetime | None = None
    while slot <= now:
        missed += 1
        latest = slot
        if missed > MAX_MISSED:
            latest = schedule.latest_at_or_before(now)
            break
        slot = schedule.next_after(slot)
    return Due(latest, missed, next_slot, beyond)


@dataclass(frozen=True)
class Plan:
    """What to do now for one CronFlow."""

    start: datetime | None = None  # the scheduled time to start a run for
    delete: tuple[Run, ...] = ()  # Replace: the unfinished runs to delete first
    forbidden: datetime | None = None  # Forbid: a due time held back by an unfinished run
    missed: int = 0  # due times found; more than 1 means some were missed
    beyond_deadline: datetime | None = None  # a time skipped as older than the deadline
    next_slot: datetime | None = None  # the next scheduled time (None while suspended)


def plan(schedule: Schedule, *, policy: ConcurrencyPolicy, deadline_seconds: int | None,
         suspend: bool, earliest: datetime, now: datetime, runs: Sequence[Run]) -> Plan:
    """The decision for now: start the due time, hold it back, or replace the running ones."""
    if suspend:
        return Plan()
    found = due(schedule, earliest=earliest, now=now, deadline_seconds=deadline_seconds)
    nothing = Plan(missed=found.missed, beyond_deadline=found.beyond_deadline,
                   next_slot=found.next_slot)
    if found.slot is None or any(run.scheduled_at == found.slot for run in runs):
        return nothing  # none due, or started already (and the status not yet written)
    active = tuple(run for run in runs if not run.finished)
    if active and policy == "Forbid":
        return replace(nothing, forbidden=found.slot)
    if active and policy == "Replace":
        return replace(nothing, start=found.slot, delete=active)
    return replace(nothing, start=found.slot)


def expired(runs: Iterable[Run], *, succeeded_limit: int, failed_limit: int) -> list[Run]:
    """The finished runs beyond the history limits, oldest first: the newest `succeeded_limit`
    succeeded and `failed_limit` failed or cancelled runs are kept."""
    finished = sorted((run for run in runs if run.finished and not run.deleting),
                      key=lambda run: (run.scheduled_at, run.name))
    succeeded = [run for run in finished if run.succeeded]
    failed = [run for run in finished if not run.succeeded]
    return sorted([*succeeded[:max(0, len(succeeded) - succeeded_limit)],
                   *failed[:max(0, len(failed) - failed_limit)]],
                  key=lambda run: (run.scheduled_at, run.name))


def run_name(cronflow: str, slot: datetime) -> str:
    """The Flow of one scheduled time: `<cronflow>-<unix minutes>`, the same for every operator
    that tries it, so an AlreadyExists means this time was started already."""
    return f"{cronflow}-{int(slot.timestamp()) // 60}"
