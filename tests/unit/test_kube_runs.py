"""The runs of one Flow (kflow.kube.runs): which spec changes start a new run, and the status
patch that starts it."""

from __future__ import annotations

from typing import Any

from kflow.api.models import MAX_RUNS_KEPT
from kflow.kube.runs import RUN_STATUS_FIELDS, changed, new_run_status, spec_digest

SPEC: dict[str, Any] = {
    "nodes": [{"name": "a", "queue": "q", "data": {"x": 1}}],
    "defaults": {"attempts": 2},
    "changePolicy": "Queue",
}


def test_only_the_run_shaping_fields_make_a_different_digest() -> None:
    digest = spec_digest(SPEC)
    # Key order, suspend, cancel and the policy itself start no run.
    reordered = {"changePolicy": "Restart", "defaults": {"attempts": 2}, "suspend": True,
                 "cancel": True, "nodes": [{"data": {"x": 1}, "queue": "q", "name": "a"}]}
    assert spec_digest(reordered) == digest
    for change in ({"nodes": [{"name": "a", "queue": "q", "data": {"x": 2}}]},
                   {"defaults": {"attempts": 3}}, {"ttlSecondsAfterFinished": 60},
                   {"notify": {"webhook": {"secretKeyRef": {"name": "s", "key": "k"}}}},
                   {"templateRef": {"name": "t"}}):
        assert spec_digest({**SPEC, **change}) != digest, change


def test_a_status_without_a_digest_never_counts_as_changed() -> None:
    # A flow recorded by a kflow before runs existed could not change its spec.
    assert not changed({"recordedAt": "2026-11-30T10:00:00Z"}, SPEC)
    assert not changed({"specDigest": spec_digest(SPEC)}, SPEC)
    assert changed({"specDigest": spec_digest(SPEC)}, {**SPEC, "defaults": {}})


def test_the_new_run_patch_archives_the_old_run_and_clears_its_fields() -> None:
    old = {"phase": "Cancelled", "runGeneration": 4, "startedAt": "2026-11-30T10:00:00Z",
           "finishedAt": "2026-11-30T10:01:00Z", "total": 3,
           "counts": {"completed": 1, "failed": 0, "cancelled": 2},
           "recordedAt": "2026-11-30T09:59:59Z", "specDigest": "abc", "template": {"name": "t"},
           "runs": [{"generation": g} for g in range(1, MAX_RUNS_KEPT + 1)]}
    patch = new_run_status(old, 6, "Restarted")
    assert patch["runs"][-1] == {"generation": 4, "phase": "Cancelled", "reason": "Restarted",
                                 "startedAt": "2026-11-30T10:00:00Z",
                                 "finishedAt": "2026-11-30T10:01:00Z", "total": 3,
                                 "completed": 1, "failed": 0}
    assert len(patch["runs"]) == MAX_RUNS_KEPT and patch["runs"][0] == {"generation": 2}
    assert patch["runGeneration"] == 6 and patch["phase"] == "Pending"
    # A merge patch removes what is null: the new run is unrecorded (recording.FRESH).
    for field in ("recordedAt", "total", "specDigest", "template", "counts", "startedAt"):
        assert field in RUN_STATUS_FIELDS and patch[field] is None, field
