"""The Flow status as a reader sees it after a series of patches: counts always add up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kflow.api.ids import FlowId
from kflow.engine import NODE_STATES, FlowSnapshot
from kflow.kube.status import FlowView, StatusPatcher, build_status


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
        "waitingChildren", "expanding", "deciding", "delayed", "ready", "active", "completed",
        "failed", "ignored", "removed", "cancelled", "skipped"}
    assert len(NODE_STATES) == len(status["counts"])
    assert status["counts"]["cancelled"] == 1 and status["progress"] == "3/3"


def gitops(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]
            if c["type"] in ("Ready", "Reconciling", "Stalled")}


@pytest.mark.parametrize(("phase", "expected"), [
    ("Running", {"Ready": ("False", "Running"), "Reconciling": ("True", "Running"),
                 "Stalled": ("False", "Running")}),
    ("Succeeded", {"Ready": ("True", "Succeeded"), "Reconciling": ("False", "Succeeded"),
                   "Stalled": ("False", "Succeeded")}),
    ("Failed", {"Ready": ("False", "Failed"), "Reconciling": ("False", "Failed"),
                "Stalled": ("True", "FlowFailed")}),
    ("Cancelled", {"Ready": ("False", "Cancelled"), "Reconciling": ("False", "Cancelled"),
                   "Stalled": ("True", "Cancelled")}),
    ("Suspended", {"Ready": ("False", "Suspended"), "Reconciling": ("False", "Suspended"),
                   "Stalled": ("False", "Suspended")}),
])
def test_ready_reconciling_and_stalled_follow_the_phase(
        phase: str, expected: dict[str, tuple[str, str]]) -> None:
    view = FlowView(uid="u-1", namespace="etl", name="orders", generation=3, valid=True)
    status = build_status(view, snap(phase, 2, completed=2), max_failures=10)
    assert gitops(status) == expected
    assert status["observedGeneration"] == 3


def test_an_invalid_a_lost_and_a_queued_change_say_so_in_the_gitops_conditions() -> None:
    view = FlowView(uid="u-1", namespace="etl", name="orders", generation=1, valid=False,
                    invalid_message="spec.templateRef.name: no FlowTemplate etl/nightly",
                    invalid_reason="TemplateNotFound")
    status = build_status(view, None, max_failures=10)
    assert gitops(status) == {"Ready": ("False", "TemplateNotFound"),
                              "Reconciling": ("False", "Pending"),
                              "Stalled": ("True", "TemplateNotFound")}
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert "no FlowTemplate etl/nightly" in stalled["message"]
    # Waiting for its template is not a failure: the Flow runs once the template exists, so
    # its phase stays Pending (nothing waiting on a terminal phase may give up on it).
    assert status["phase"] == "Pending"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("False", "TemplateNotFound")

    broken = FlowView(uid="u-4", namespace="etl", name="o", generation=1, valid=False,
                      invalid_message='node "a": cycle a -> b -> a')
    assert build_status(broken, None, max_failures=10)["phase"] == "Failed"

    lost = FlowView(uid="u-2", namespace="etl", name="o", generation=1, valid=True,
                    phase="Running", lost_message="Redis no longer holds the state")
    assert gitops(build_status(lost, None, max_failures=10))["Stalled"] == ("True", "StateLost")

    queued = FlowView(uid="u-3", namespace="etl", name="o", generation=2, valid=True,
                      change_queued=True)
    for phase in ("Running", "Succeeded"):
        conditions = gitops(build_status(queued, snap(phase, 1, completed=1), 10))
        assert conditions["Reconciling"] == ("True", "ChangeQueued")
        assert conditions["Ready"][0] == "False"


def test_a_patch_from_an_older_snapshot_never_lands_after_a_newer_one() -> None:
    """A flow admitted held: the loop's patch read it Suspended; the admission's flush after
    the resume reads it Running. The API server must end with Running, whatever the order
    the two patches would otherwise arrive in."""
    async def scenario() -> dict[str, Any]:
        server: dict[str, Any] = {}
        first_read = asyncio.Event()
        release_first = asyncio.Event()
        phases = iter(["Suspended", "Running"])
        patches: list[str] = []

        async def snapshot(_flow: FlowId) -> FlowSnapshot:
            phase = next(phases, "Running")
            if phase == "Suspended":
                first_read.set()
                await release_first.wait()
            return snap(phase, 2, ready=2)

        async def patch(_namespace: str, _name: str, status: dict[str, Any]) -> bool:
            nonlocal server
            server = merge_patch(server, status)
            patches.append(status["phase"])
            return True

        patcher = StatusPatcher(patch=patch, snapshot=snapshot, on_phase_change=lambda *_: None)
        patcher.track(FlowView(uid="u-1", namespace="etl", name="orders", generation=1,
                               valid=True))
        loop_task = asyncio.create_task(patcher.run())
        patcher.mark("u-1")
        await first_read.wait()  # the loop's patch holds a Suspended snapshot
        flush = asyncio.create_task(patcher.flush("u-1"))
        for _ in range(20):
            await asyncio.sleep(0)
        release_first.set()
        await flush
        for _ in range(200):  # until the loop's patch has landed too
            if len(patches) >= 2:
                break
            await asyncio.sleep(0.005)
        loop_task.cancel()
        return server

    server = asyncio.run(scenario())
    assert server["phase"] == "Running", server["phase"]
