"""The flow-step reply envelope is decoded in one place, whatever the script's rows."""

from __future__ import annotations

import json

import pytest

from kflow.api.states import AttemptOutcome, FlowPhase, StartStatus
from kflow.store.types import FlowStep, Queued, decode_step, settled_row, started_row


def test_an_envelope_decodes_phase_namespace_name_rows_and_queued() -> None:
    raw = json.dumps(["Running", "team-a", "orders-7",
                      [[True, "work", "completed", False], [False, "work", "stale", False]],
                      [["top", "agg", 3, 0], ["later", "agg", 0, 1700000000000]],
                      ["files"], ["gate"], False])
    step = decode_step(raw, settled_row)
    assert step == FlowStep(FlowPhase.RUNNING, "team-a", "orders-7", step.rows, [
        Queued("top", "agg", 3, 0), Queued("later", "agg", 0, 1_700_000_000_000)],
        expand=("files",), decide=("gate",))
    assert [(r.accepted, r.queue, r.outcome, r.at_ms) for r in step.rows] == [
        (True, "work", AttemptOutcome.COMPLETED, None),
        (False, "work", AttemptOutcome.STALE, None)]
    assert step.phase == "Running" and step.queue_id("agg") == "team-a/agg"


def test_empty_lua_tables_come_as_objects_and_decode_as_empty_lists() -> None:
    # cjson cannot tell an empty array from an empty object: {} stands for both.
    step = decode_step(b'["Missing","","",{},{},{},{},false]', settled_row)
    assert step.phase is FlowPhase.MISSING and step.rows == [] and step.queued == []
    assert step.expand == () and step.decide == ()


def test_a_suspended_flow_and_a_retry_time_decode() -> None:
    step = decode_step(
        json.dumps(["Suspended", "ns", "f", [[True, "q", "retry", 1234]], {}, {}, {}, False]),
        settled_row)
    assert step.phase is FlowPhase.SUSPENDED
    assert step.rows[0].outcome is AttemptOutcome.RETRY and step.rows[0].at_ms == 1234


def test_start_rows_keep_an_early_node_priority_apart_from_its_attempt() -> None:
    step = decode_step(json.dumps(["Running", "ns", "f", [
        ["a", "ok", 2, '{"k":1}', 5000, 0, 0],
        ["b", "early", 0, "null", -1, 99, 7],
        ["c", "gone", 0, "null", -1, 0, 0, False]], {}, {}, {}, False]), started_row)
    a, b, c = step.rows
    assert (a.status, a.attempt, a.data, a.timeout_ms) == (StartStatus.OK, 2, {"k": 1}, 5000)
    assert (b.status, b.attempt, b.due, b.rank) == (StartStatus.EARLY, 0, 99, 7)
    assert c.status is StartStatus.GONE and c.timeout_ms is None
    assert a.inputs is None  # not asked for


def test_a_start_row_carries_the_inputs_it_was_asked_for() -> None:
    step = decode_step(json.dumps(["Running", "ns", "f", [
        ["p", "ok", 1, "null", -1, 3, 0,
         [["a", '{"n":1}', "b", "2"], ["c", "broke"], {}, ["m", 4], False]]], {}, {}, {},
        False]), started_row)
    inputs = step.rows[0].inputs
    assert inputs is not None
    assert inputs.values == [("a", {"n": 1}), ("b", 2)] and inputs.ignored == [("c", "broke")]
    assert inputs.failed == [] and inputs.maps == [("m", 4)] and inputs.paged is False


def test_an_ended_flow_with_exit_handlers_says_so() -> None:
    step = decode_step(json.dumps(["Failed", "ns", "f", {}, {}, {}, {}, True]), settled_row)
    assert step.exits is True
    assert decode_step(json.dumps(["Succeeded", "ns", "f", {}, {}, {}, {}, False]),
                       settled_row).exits is False


def test_an_unknown_phase_or_outcome_is_an_error_not_a_string_passed_on() -> None:
    with pytest.raises(ValueError, match="Exploded"):
        decode_step(json.dumps(["Exploded", "", "", {}, {}, {}, {}, False]), settled_row)
    with pytest.raises(ValueError, match="vanished"):
        decode_step(json.dumps(["Running", "", "", [[True, "q", "vanished", False]], {}, {}, {},
                                False]), settled_row)
