"""The Flow status as a reader sees it after a series of patches: counts always add up."""

from __future__ import annotations

from typing import Any

from kflow.engine import NODE_STATES, FlowSnapshot
from kflow.kube.status import FlowView, build_status


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: what the API server does with the operator's status patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def snap(phase: str, total: int, **counts: int) -> FlowSnapshot:
    by_state = {k.replace("_", "-"): v for k, v in counts.items()}
    done = sum(v for k, v in by_state.items()
               if k in ("completed", "failed", "ignored", "removed", "cancelled"))
    return FlowSnapshot(phase=phase, total=total, counts=by_state, done=done,
                        started_at_ms=1_764_288_000_000, finished_at_ms=None)


def test_counts_add_up_to_total_after_every_patch_of_a_flows_life() -> None:
    view = FlowView(uid="u-1", namespace="etl", name="orders", generation=1, valid=True)
    life = [
        snap("Running", 31, ready=30, waiting_children=1),
        snap("Running", 31, active=20, ready=10, waiting_children=1),
        snap("Running", 31, completed=30, ready=1),
        snap("Succeeded", 31, completed=31),
    ]
    seen: dict[str, Any] = {}
    for snapshot in life:
        seen = merge_patch(seen, build_status(view, snapshot, max_failures=10))
        assert sum(seen["counts"].values()) == seen["total"] == 31, seen["counts"]
    assert seen["counts"]["completed"] == 31 and seen["counts"]["ready"] == 0


def test_every_node_state_is_published_even_at_zero() -> None:
    view = FlowView(uid="u-1", namespace="etl", name="orders", generation=1, valid=True)
    status = build_status(view, snap("Failed", 3, failed=2, cancelled=1), max_failures=10)
    assert set(status["counts"]) == {
        "waitingChildren", "delayed", "ready", "active", "completed", "failed", "ignored",
        "removed", "cancelled"}
    assert len(NODE_STATES) == len(status["counts"])
    assert status["counts"]["cancelled"] == 1 and status["progress"] == "3/3"
