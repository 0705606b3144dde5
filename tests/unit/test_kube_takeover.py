"""A standby that takes over reports every Flow it finds, also those kopf met first in an
admission review (kflow.kube.handlers.missed_resume)."""

from __future__ import annotations

from typing import Any

from kflow.kube.handlers import DIFFBASE_KEY, KOPF_PREFIX, missed_resume

ADMITTED = {f"{KOPF_PREFIX}/{DIFFBASE_KEY}": "{}"}


def flow(uid: str = "u1", annotations: dict[str, str] | None = None,
         deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "namespace": "ns", "name": "f",
                            "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {"metadata": meta}


def test_an_admitted_flow_this_process_does_not_track_is_taken_over() -> None:
    assert missed_resume(flow(annotations=ADMITTED), tracked={})


def test_a_tracked_flow_is_left_to_its_handlers() -> None:
    assert not missed_resume(flow(annotations=ADMITTED), tracked={"u1": object()})


def test_a_new_flow_is_left_to_the_create_handler() -> None:
    # kopf writes its copy only once the create handler succeeded.
    assert not missed_resume(flow(annotations={"other": "x"}), tracked={})
    assert not missed_resume(flow(), tracked={})


def test_a_flow_being_deleted_is_left_to_the_finalizer() -> None:
    assert not missed_resume(flow(annotations=ADMITTED, deleting=True), tracked={})
