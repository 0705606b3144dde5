"""A Flow is recorded in Redis exactly once: what the operator decides from the Flow's status
and whether Redis still holds the flow (kflow.kube.recording)."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.engine import FlowSnapshot
from kflow.kube.recording import CONDITION_STATE_LOST, Recording, decide, lost_message
from kflow.kube.status import FlowView, build_status


def status(phase: str | None = None, *, recorded: bool = False, total: int | None = None,
           valid: str = "True") -> dict[str, Any]:
    out: dict[str, Any] = {"conditions": [{"type": "Valid", "status": valid}]}
    if phase:
        out["phase"] = phase
    if recorded:
        out["recordedAt"] = "2026-11-30T07:00:00Z"
    if total is not None:
        out["total"] = total
    return out


@pytest.mark.parametrize(("flow_status", "in_redis", "expected"), [
    # A new Flow (no status yet, or the Pending one written at validation).
    ({}, False, Recording.FRESH),
    (status("Pending"), False, Recording.FRESH),
    # Recorded earlier and still in Redis: carry on.
    (status("Running", recorded=True, total=3), True, Recording.RESUME),
    (status("Succeeded", recorded=True, total=3), True, Recording.RESUME),
    # In Redis but never marked: the operator stopped between recording and marking (the
    # graph is held), or the flow comes from a kflow that did not mark: mark, then release.
    ({}, True, Recording.MARK),
    (status("Running", total=3), True, Recording.MARK),
    # Finished, and its keys expired (ttlSecondsAfterFinished) or Redis lost them: never run
    # again, with or without the mark (flows recorded before the mark existed are finished too).
    (status("Succeeded", recorded=True, total=3), False, Recording.EXPIRED),
    (status("Failed", total=3), False, Recording.EXPIRED),
    (status("Cancelled", recorded=True), False, Recording.EXPIRED),
    # Recorded, not finished, and gone from Redis: lost; wait for the user.
    (status("Running", recorded=True, total=3), False, Recording.LOST),
    (status("Suspended", recorded=True, total=3), False, Recording.LOST),
    (status("Pending", recorded=True), False, Recording.LOST),
    # Reported from Redis once (it has `total`), without the mark: recorded before, lost now.
    (status("Running", total=3), False, Recording.LOST),
    # Failed because its spec was invalid: it never ran, so recording it is the first time.
    (status("Failed", valid="False"), False, Recording.FRESH),
])
def test_decision(flow_status: dict[str, Any], in_redis: bool, expected: Recording) -> None:
    assert decide(flow_status, in_redis) is expected


def test_a_lost_flow_keeps_its_phase_and_counts_and_gets_state_lost() -> None:
    view = FlowView(uid="u1", namespace="shop", name="orders", generation=1,
                    conditions={"Valid": {"type": "Valid", "status": "True",
                                          "reason": "Compiled", "message": "",
                                          "lastTransitionTime": "2026-11-30T07:00:00Z"}})
    view.lost_message = lost_message("shop", "orders", "2026-11-30T07:00:00Z")

    patch = build_status(view, None, max_failures=10)

    # A merge patch: phase, progress and counts are not in it, so they stay as they were.
    assert set(patch) == {"observedGeneration", "conditions"}
    by_type = {c["type"]: c for c in patch["conditions"]}
    assert by_type["Valid"]["status"] == "True"
    lost = by_type[CONDITION_STATE_LOST]
    assert lost["status"] == "True" and lost["reason"] == "RedisStateLost"
    assert "kubectl -n shop annotate flow orders kflow.dev/retry=" in lost["message"]
    assert "2026-11-30T07:00:00Z" in lost["message"]


def test_the_mark_is_in_every_status_and_state_lost_clears_after_starting_over() -> None:
    view = FlowView(uid="u1", namespace="shop", name="orders", valid=True,
                    recorded_at="2026-11-30T08:00:00Z",
                    conditions={CONDITION_STATE_LOST: {"type": CONDITION_STATE_LOST,
                                                       "status": "True"}})
    snapshot = FlowSnapshot(phase="Running", total=2, counts={"waiting": 2}, done=0,
                            started_at_ms=None, finished_at_ms=None)

    patch = build_status(view, snapshot, max_failures=10)

    assert patch["recordedAt"] == "2026-11-30T08:00:00Z"
    lost = next(c for c in patch["conditions"] if c["type"] == CONDITION_STATE_LOST)
    assert lost["status"] == "False"
