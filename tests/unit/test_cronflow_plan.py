"""A CronFlow's pure decisions: due times after an outage, the deadline, concurrency policies,
history limits; and its schema's verdicts on schedules, time zones and limits."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kflow.api.cron import Schedule, parse_cronflow
from kflow.api.errors import SpecError
from kflow.kube.cronflows import CronClock, conditions, judge, run_flow
from kflow.kube.cronplan import MAX_MISSED, Run, due, expired, plan, run_name, run_of

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVERY_MINUTE = Schedule("* * * * *", ZoneInfo("UTC"))


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def run(minute: int, phase: str | None, name: str | None = None) -> Run:
    return Run(name=name or f"cf-{minute}", uid=None, phase=phase,
               scheduled_at=T0 + minutes(minute))


# ---- due times -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("earliest", "now", "deadline", "slot", "missed", "beyond"),
    [
        # nothing due yet: the last start was this minute
        (T0, T0 + timedelta(seconds=30), None, None, 0, None),
        # one due time
        (T0, T0 + minutes(1), None, T0 + minutes(1), 1, None),
        # an outage of 10 minutes: only the latest runs, 10 were due
        (T0, T0 + minutes(10) + timedelta(seconds=5), None, T0 + minutes(10), 10, None),
        # the deadline cuts the window: only times within 120 s count
        (T0, T0 + minutes(10) + timedelta(seconds=5), 120, T0 + minutes(10), 2,
         T0 + minutes(8)),
        # every time in the window is gone: nothing starts, the skipped one is named
        (T0, T0 + minutes(10) + timedelta(seconds=50), 30, None, 0, T0 + minutes(10)),
        # more than MAX_MISSED: the count stops, the latest still runs
        (T0, T0 + minutes(500) + timedelta(seconds=1), None, T0 + minutes(500),
         MAX_MISSED + 1, None),
    ],
)
def test_due_time_after_the_last_start(earliest: datetime, now: datetime, deadline: int | None,
                                       slot: datetime | None, missed: int,
                                       beyond: datetime | None) -> None:
    found = due(EVERY_MINUTE, earliest=earliest, now=now, deadline_seconds=deadline)
    assert (found.slot, found.missed, found.beyond_deadline) == (slot, missed, beyond)
    assert found.next_slot == now.replace(second=0, microsecond=0) + minutes(1)


def test_schedule_is_read_in_its_time_zone_across_summer_time() -> None:
    # 02:30 Berlin does not exist on 2026-03-29; croniter moves it, and the day after is 00:30 UTC
    berlin = Schedule("30 2 * * *", ZoneInfo("Europe/Berlin"))
    first = berlin.next_after(datetime(2026, 3, 27, 12, tzinfo=UTC))
    assert first == datetime(2026, 3, 28, 1, 30, tzinfo=UTC)  # CET: UTC+1
    assert berlin.next_after(datetime(2026, 3, 30, 12, tzinfo=UTC)) == datetime(
        2026, 3, 31, 0, 30, tzinfo=UTC)  # CEST: UTC+2


# ---- concurrency policies ------------------------------------------------------------------
NOW = T0 + minutes(3) + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("policy", "runs", "start", "forbidden", "deleted"),
    [
        ("Allow", [run(2, "Running")], T0 + minutes(3), None, []),
        ("Forbid", [run(2, "Running")], None, T0 + minutes(3), []),
        ("Forbid", [run(2, None)], None, T0 + minutes(3), []),  # not seen yet: unfinished
        ("Forbid", [run(2, "Suspended")], None, T0 + minutes(3), []),
        ("Forbid", [run(2, "Succeeded")], T0 + minutes(3), None, []),
        ("Replace", [run(1, "Failed"), run(2, "Running")], T0 + minutes(3), None, ["cf-2"]),
        ("Replace", [run(2, "Cancelled")], T0 + minutes(3), None, []),
        # this time's Flow exists already (status not written before a restart): no second
        ("Allow", [run(3, "Running")], None, None, []),
    ],
)
def test_policy_decides_what_an_unfinished_run_does(policy: Any, runs: list[Run],
                                                    start: datetime | None,
                                                    forbidden: datetime | None,
                                                    deleted: list[str]) -> None:
    decided = plan(EVERY_MINUTE, policy=policy, deadline_seconds=None, suspend=False,
                   earliest=T0 + minutes(2), now=NOW, runs=runs)
    assert decided.start == start
    assert decided.forbidden == forbidden
    assert [r.name for r in decided.delete] == deleted
    assert decided.next_slot == T0 + minutes(4)


def test_forbid_starts_the_held_time_once_the_run_ends_within_the_deadline() -> None:
    held = plan(EVERY_MINUTE, policy="Forbid", deadline_seconds=90, suspend=False,
                earliest=T0 + minutes(2), now=NOW, runs=[run(2, "Running")])
    assert held.forbidden == T0 + minutes(3)
    later = NOW + timedelta(seconds=50)
    freed = plan(EVERY_MINUTE, policy="Forbid", deadline_seconds=90, suspend=False,
                 earliest=T0 + minutes(2), now=later, runs=[run(2, "Succeeded")])
    assert freed.start == T0 + minutes(3)
    too_late = plan(EVERY_MINUTE, policy="Forbid", deadline_seconds=30, suspend=False,
                    earliest=T0 + minutes(2), now=later, runs=[run(2, "Succeeded")])
    assert too_late.start is None and too_late.beyond_deadline == T0 + minutes(3)


def test_suspended_starts_nothing_and_names_no_next_time() -> None:
    decided = plan(EVERY_MINUTE, policy="Allow", deadline_seconds=None, suspend=True,
                   earliest=T0, now=NOW, runs=[])
    assert (decided.start, decided.next_slot, decided.delete) == (None, None, ())


# ---- history limits ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ok", "bad", "gone"),
    [
        (3, 1, ["cf-0", "cf-1", "cf-2"]),
        (0, 0, ["cf-0", "cf-1", "cf-2", "cf-3", "cf-4", "cf-5", "cf-6"]),
        (10, 10, []),
        (1, 2, ["cf-0", "cf-1", "cf-4", "cf-5"]),
    ],
)
def test_history_limits_delete_the_oldest_finished_runs(ok: int, bad: int,
                                                        gone: list[str]) -> None:
    runs = [run(0, "Succeeded"), run(1, "Failed"), run(2, "Failed"), run(3, "Cancelled"),
            run(4, "Succeeded"), run(5, "Succeeded"), run(6, "Succeeded"), run(7, "Running"),
            run(8, None), replace(run(9, "Running"), deleting=True)]  # going: never counted
    # Failed/Cancelled: 1, 2, 3 (keep the newest `bad`); Succeeded: 0, 4, 5, 6
    assert [r.name for r in expired(runs, succeeded_limit=ok, failed_limit=bad)] == gone


def test_a_run_that_never_will_run_is_finished() -> None:
    flow = {"metadata": {"name": "cf-1", "annotations": {
        "kflow.dev/scheduled-at": "2026-03-01T12:01:00Z"}},
        "status": {"conditions": [{"type": "Valid", "status": "False"}]}}
    seen = run_of(flow)
    assert seen.finished and not seen.succeeded
    assert seen.scheduled_at == T0 + minutes(1)
    assert not run_of({"metadata": {"name": "x"}, "status": {"phase": "Running"}}).finished
    assert run_of({"metadata": {"name": "x", "deletionTimestamp": "2026-03-01T12:00:00Z"},
                   "status": {"phase": "Running"}}).finished


def test_run_names_are_the_cronflow_and_unix_minutes() -> None:
    assert run_name("nightly", T0) == f"nightly-{int(T0.timestamp()) // 60}"


# ---- the schema's verdicts ---------------------------------------------------------------
BASE: dict[str, Any] = {
    "apiVersion": "kflow.dev/v1alpha1", "kind": "CronFlow",
    "metadata": {"name": "nightly", "namespace": "etl"},
    "spec": {"schedule": "*/5 * * * *",
             "flow": {"spec": {"nodes": [{"name": "a", "queue": "q"}]}}},
}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule", "cannot be read"),
        ({"schedule": "* * * * * *"}, "spec.schedule", "has 6 fields, not 5"),
        ({"schedule": "@sometimes"}, "spec.schedule", "not a known macro"),
        ({"timeZone": "Mars/Olympus"}, "spec.timeZone", "not an IANA time zone"),
        ({"successfulFlowsHistoryLimit": -1}, "spec.successfulFlowsHistoryLimit", "at least 0"),
        ({"failedFlowsHistoryLimit": -2}, "spec.failedFlowsHistoryLimit", "at least 0"),
        ({"startingDeadlineSeconds": -5}, "spec.startingDeadlineSeconds", "at least 0"),
        ({"concurrencyPolicy": "Never"}, "spec.concurrencyPolicy", "'Forbid'"),
    ],
)
def test_a_bad_cronflow_is_refused_naming_field_and_fix(change: dict[str, Any], field: str,
                                                        words: str) -> None:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(change)
    with pytest.raises(SpecError) as caught:
        parse_cronflow(doc)
    assert [e.field for e in caught.value.errors] == [field]
    assert words in str(caught.value) and "CronFlow etl/nightly" in str(caught.value)


def test_a_good_cronflow_reads_with_its_defaults() -> None:
    doc = copy.deepcopy(BASE)
    doc["spec"]["schedule"] = "@hourly"
    spec = parse_cronflow(doc).spec
    assert (spec.concurrency_policy, spec.successful_flows_history_limit,
            spec.failed_flows_history_limit, spec.suspend) == ("Allow", 3, 1, False)


def test_a_long_name_is_refused() -> None:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = "n" * 53
    with pytest.raises(SpecError, match="more than 52"):
        parse_cronflow(doc)


# ---- the controller's pure parts -----------------------------------------------------------
def test_a_scaled_clock_runs_faster_from_its_start() -> None:
    wall = [1_000_000.0]
    clock = CronClock(60.0, wall=lambda: wall[0])
    wall[0] += 1.5
    assert clock.now() == datetime.fromtimestamp(1_000_000 + 90, UTC)
    assert clock.real_seconds(60) == 1.0
    assert clock.at(1_000_000 - 2) == datetime.fromtimestamp(1_000_000 - 120, UTC)
    with pytest.raises(ValueError, match="above 0"):
        CronClock(0)


def test_a_run_is_the_cronflows_flow_with_name_label_annotation_and_owner() -> None:
    cronflow = {"metadata": {"name": "nightly", "namespace": "etl", "uid": "u-1"},
                "spec": {"flow": {"metadata": {"labels": {"team": "a"}},
                                  "spec": {"nodes": [{"name": "a", "queue": "q"}]}}}}
    flow = run_flow(cronflow, T0)
    meta = flow["metadata"]
    assert meta["name"] == run_name("nightly", T0)
    assert meta["labels"] == {"team": "a", "kflow.dev/cronflow": "nightly"}
    assert meta["annotations"] == {"kflow.dev/scheduled-at": "2026-03-01T12:00:00Z"}
    assert meta["ownerReferences"] == [{"apiVersion": "kflow.dev/v1alpha1", "kind": "CronFlow",
                                        "name": "nightly", "uid": "u-1", "controller": True}]
    assert flow["spec"] == cronflow["spec"]["flow"]["spec"]


@pytest.mark.parametrize(
    ("problem", "suspended", "ready", "stalled"),
    [
        (None, False, ("True", "Scheduled"), ("False", "Scheduled")),
        (None, True, ("True", "Suspended"), ("False", "Suspended")),
        (("InvalidSchedule", "bad"), False, ("False", "InvalidSchedule"),
         ("True", "InvalidSchedule")),
        (("InvalidSpec", "bad"), True, ("False", "InvalidSpec"), ("True", "InvalidSpec")),
    ],
)
def test_conditions_follow_the_kstatus_convention(problem: tuple[str, str] | None,
                                                  suspended: bool, ready: tuple[str, str],
                                                  stalled: tuple[str, str]) -> None:
    made = {c["type"]: c for c in conditions([], problem=problem, suspended=suspended,
                                             next_slot=T0, generation=4, now=T0)}
    assert (made["Ready"]["status"], made["Ready"]["reason"]) == ready
    assert (made["Stalled"]["status"], made["Stalled"]["reason"]) == stalled
    assert made["Reconciling"]["status"] == "False"
    assert {c["observedGeneration"] for c in made.values()} == {4}
    # an unchanged status keeps its transition time
    again = conditions(list(made.values()), problem=problem, suspended=suspended,
                       next_slot=T0, generation=4, now=T0 + minutes(5))
    assert [c["lastTransitionTime"] for c in again] == ["2026-03-01T12:00:00Z"] * 3


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        ({"schedule": "0 25 * * *"}, "InvalidSchedule", "spec.schedule"),
        ({"timeZone": "Europe/Atlantis"}, "InvalidSchedule", "spec.timeZone"),
        ({"failedFlowsHistoryLimit": -1}, "InvalidSpec", "spec.failedFlowsHistoryLimit"),
        ({"flow": {"spec": {"nodes": [{"name": "a", "queue": "q", "children": ["b"]},
                                      {"name": "b", "queue": "q", "children": ["a"]}]}}},
         "InvalidSpec", "spec.flow: Flow etl/nightly"),
    ],
)
def test_the_judge_names_reason_and_field(change: dict[str, Any], reason: str,
                                          words: str) -> None:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(change)
    problem, parsed = judge(doc)
    assert parsed is None and problem is not None
    assert problem[0] == reason and words in problem[1], problem
    assert judge(BASE) == (None, parse_cronflow(BASE))
