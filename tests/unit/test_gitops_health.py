"""The Argo CD health checks (gitops/argocd/health) and kstatus on hand-written objects, through
hack/gitops-health: the real gopher-lua with Argo CD's libraries, the real cli-utils kstatus.
No cluster: the Flows' statuses are made by the operator's own build_status, the other objects
follow what it writes (tests/e2e/installed/test_gitops_health.py checks the same on objects from
a live run). The first run builds the Go
program (about 30 s on a cold Go cache), later runs take well under a second."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kflow.api.states import FlowPhase
from kflow.devkit.gitops import GitOpsHealth, Health, gitops_health, run_health_tool
from kflow.engine import FlowSnapshot, NodeFailure
from kflow.kube.status import FlowView, build_status

API = "kflow.dev/v1alpha1"


def cond(ctype: str, status: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": ctype, "status": "True" if status else "False", "reason": reason,
            "message": message, "lastTransitionTime": "2026-11-30T12:00:00Z"}


def obj(kind: str, name: str, status: dict[str, Any] | None, generation: int = 1,
        spec: dict[str, Any] | None = None) -> dict[str, Any]:
    made: dict[str, Any] = {"apiVersion": API, "kind": kind,
                            "metadata": {"name": name, "namespace": "ns",
                                         "generation": generation},
                            "spec": spec or {}}
    if status is not None:
        made["status"] = {"observedGeneration": generation, **status}
    return made


def flow(name: str, phase: str, ready: tuple[bool, str], reconciling: tuple[bool, str],
         stalled: tuple[bool, str], message: str = "", **extra: Any) -> dict[str, Any]:
    return obj("Flow", name, {
        "phase": phase, "progress": "1/3",
        "conditions": [cond("Ready", *ready), cond("Reconciling", *reconciling),
                       cond("Stalled", *stalled, message)], **extra})


# (object, kstatus, Argo CD status, a piece of the Argo CD message)
CASES = [
    (flow("running", "Running", (False, "Running"), (True, "Running"), (False, "Running")),
     "InProgress", "Progressing", "Running, 1/3 nodes done"),
    (flow("pending", "Pending", (False, "Pending"), (True, "Pending"), (False, "Pending")),
     "InProgress", "Progressing", "Pending"),
    (flow("queued", "Running", (False, "Running"), (True, "ChangeQueued"),
          (False, "Running")), "InProgress", "Progressing", "Running"),
    (flow("succeeded", "Succeeded", (True, "Succeeded"), (False, "Succeeded"),
          (False, "Succeeded")), "Current", "Healthy", "Succeeded"),
    (flow("failed", "Failed", (False, "Failed"), (False, "Failed"), (True, "FlowFailed"),
          'node "load" failed: boom'), "Failed", "Degraded", 'node "load" failed: boom'),
    (flow("cancelled", "Cancelled", (False, "Cancelled"), (False, "Cancelled"),
          (True, "Cancelled"), "cancelled"), "Failed", "Degraded", "Cancelled"),
    (flow("invalid", "Failed", (False, "InvalidSpec"), (False, "InvalidSpec"),
          (True, "InvalidSpec"), 'node "a" lists child "b", which no node defines'),
     "Failed", "Degraded", "which no node defines"),
    (flow("no-template", "Pending", (False, "TemplateNotFound"), (False, "TemplateNotFound"),
          (True, "TemplateNotFound"), "FlowTemplate ns/etl not found"),
     "Failed", "Degraded", "FlowTemplate ns/etl not found"),
    # Suspended: Ready=False and no Reconciling/Stalled, which kstatus reads as InProgress
    # (cli-utils' checkReadyCondition); Argo CD has a status of its own for it.
    (flow("suspended", "Suspended", (False, "Suspended"), (False, "Suspended"),
          (False, "Suspended")), "InProgress", "Suspended", "kubectl kflow resume"),
    # The operator has not seen the object yet: no status, or a status about an older spec.
    (obj("Flow", "new", None), "Current", "Progressing", "waiting for the kflow operator"),
    ({**flow("edited", "Succeeded", (True, "Succeeded"), (False, "Succeeded"),
             (False, "Succeeded")), "metadata": {"name": "edited", "generation": 2}},
     "InProgress", "Progressing", "has not handled generation 2"),
    # A status written before the operator had Ready/Reconciling/Stalled.
    (obj("Flow", "legacy-failed", {"phase": "Failed", "conditions": [
        cond("Valid", True, "Compiled"), cond("Complete", False, "Failed"),
        cond("Failed", True, "Failed", 'node "x" failed')]}),
     "Current", "Degraded", 'node "x" failed'),
    (obj("Flow", "lost", {"conditions": [cond("StateLost", True, "RedisStateLost", "gone"),
                                         cond("Stalled", True, "StateLost", "gone")]}),
     "Failed", "Degraded", "gone"),
    (obj("Queue", "valid", {"waiting": 2, "active": 1, "delayed": 0, "conditions": [
        cond("Valid", True, "Valid"), cond("Ready", True, "Valid"),
        cond("Stalled", False, "Valid")]}), "Current", "Healthy", "2 waiting, 1 active"),
    (obj("Queue", "invalid", {"conditions": [
        cond("Valid", False, "PolicyViolation", "runs as root"),
        cond("Ready", False, "InvalidSpec", "runs as root"),
        cond("Stalled", True, "InvalidSpec", "runs as root")]}),
     "Failed", "Degraded", "runs as root"),
    (obj("FlowTemplate", "valid", {"conditions": [
        cond("Valid", True, "Valid"), cond("Ready", True, "Valid", "3 parameters")]}),
     "Current", "Healthy", "3 parameters"),
    (obj("FlowTemplate", "invalid", {"conditions": [
        cond("Valid", False, "InvalidSpec", 'parameter "n": default "x" is not an integer'),
        cond("Ready", False, "InvalidSpec"), cond("Stalled", True, "InvalidSpec",
                                                   'parameter "n": default "x"')]}),
     "Failed", "Degraded", 'parameter "n"'),
    (obj("CronFlow", "scheduled", {
        "nextScheduleTime": "2026-11-30T13:05:00Z", "active": [{"name": "a", "uid": "u"}],
        "lastFlow": {"name": "scheduled-29413140", "phase": "Succeeded"},
        "conditions": [cond("Ready", True, "Scheduled"), cond("Stalled", False, "Scheduled"),
                       cond("Reconciling", False, "Scheduled")]}),
     "Current", "Healthy", "next run at 2026-11-30T13:05:00Z, 1 running"),
    (obj("CronFlow", "last-failed", {
        "lastFlow": {"name": "last-failed-29413140", "phase": "Failed"},
        "conditions": [cond("Ready", True, "Scheduled"), cond("Stalled", False, "Scheduled")]}),
     "Current", "Degraded", "last-failed-29413140, failed"),
    (obj("CronFlow", "paused", {"conditions": [cond("Ready", False, "Suspended"),
                                               cond("Stalled", False, "Suspended")]},
         spec={"suspend": True}), "InProgress", "Suspended", "no new runs"),
    (obj("CronFlow", "bad-schedule", {"conditions": [
        cond("Ready", False, "InvalidSchedule"),
        cond("Stalled", True, "InvalidSchedule", 'spec.schedule "61 * * * *": bad minute')]}),
     "Failed", "Degraded", "bad minute"),
]


@pytest.fixture(scope="module")
def seen() -> dict[tuple[str, str], GitOpsHealth]:
    found = gitops_health([case[0] for case in CASES])
    return {(s.kind, s.name): s for s in found}


@pytest.mark.parametrize(("made", "kstatus", "argocd", "message"), CASES,
                         ids=[f"{c[0]['kind']}-{c[0]['metadata']['name']}" for c in CASES])
def test_health(seen: dict[tuple[str, str], GitOpsHealth], made: dict[str, Any], kstatus: str,
                argocd: str, message: str) -> None:
    got = seen[made["kind"], made["metadata"]["name"]]
    assert got.kstatus.status == kstatus, got
    assert got.argocd is not None and got.argocd.status == argocd, got
    assert message in got.argocd.message, got


def test_a_kind_without_health_lua_has_no_argocd_health() -> None:
    [got] = gitops_health([{"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "c", "namespace": "ns"}}])
    assert got == GitOpsHealth("ConfigMap", "c", Health("Current", "Resource is always ready"),
                               None)


@pytest.mark.parametrize(("script", "error"), [
    # Argo CD opens no string library for health checks: the harness must not either.
    ('return {status = "Healthy", message = string.format("%d", 1)}', "string"),
    ('return {status = "Fine", message = ""}', 'status "Fine"'),
    ('return "Healthy"', "not a table"),
])
def test_the_harness_fails_as_argo_cd_would(tmp_path: Path, script: str, error: str) -> None:
    check = tmp_path / "kflow.dev" / "Flow" / "health.lua"
    check.parent.mkdir(parents=True)
    check.write_text(script)
    done = run_health_tool([obj("Flow", "f", None)], health=tmp_path)
    assert done.returncode == 1, done
    [report] = json.loads(done.stdout)
    assert error in report["error"], report


def built(name: str, view: FlowView, snapshot: FlowSnapshot | None) -> dict[str, Any]:
    """A Flow with the status the operator builds for it."""
    return obj("Flow", name, build_status(view, snapshot, max_failures=10),
               generation=view.generation or 1)


def snapshot(phase: str, done: int = 1, failures: tuple[NodeFailure, ...] = ()) -> FlowSnapshot:
    return FlowSnapshot(phase=FlowPhase(phase), total=2, counts={"completed": done}, done=done,
                        started_at_ms=1_764_288_000_000, finished_at_ms=None,
                        failures=list(failures))


def view(**fields: Any) -> FlowView:
    return FlowView(**{"uid": "u-1", "namespace": "ns", "name": "f", "generation": 2,
                       "valid": True, **fields})


# Statuses from build_status: (object, kstatus, Argo CD status, a piece of its message).
BUILT = [
    (built("pending", view(), None), "InProgress", "Progressing", "Pending"),
    (built("running", view(), snapshot("Running")), "InProgress", "Progressing",
     "Running, 1/2 nodes done"),
    (built("succeeded", view(), snapshot("Succeeded", 2)), "Current", "Healthy",
     "Succeeded, 2/2 nodes done"),
    (built("failed", view(), snapshot("Failed", 2, (NodeFailure("load", "boom", 2),))),
     "Failed", "Degraded", 'Failed (FlowFailed): node "load" failed: boom'),
    (built("cancelled", view(), snapshot("Cancelled", 2)), "Failed", "Degraded", "Cancelled"),
    (built("suspended", view(), snapshot("Suspended")), "InProgress", "Suspended",
     "Suspended, 1/2 nodes done"),
    (built("invalid", view(valid=False, invalid_message='node "a": cycle a -> b -> a'), None),
     "Failed", "Degraded", "(InvalidSpec): node \"a\": cycle"),
    (built("no-template", view(valid=False, invalid_reason="TemplateNotFound",
                               invalid_message="no FlowTemplate ns/etl"), None),
     "Failed", "Degraded", "(TemplateNotFound): no FlowTemplate ns/etl"),
    (built("queued", view(change_queued=True), snapshot("Succeeded", 2)), "InProgress",
     "Progressing", "a changed spec runs once this run finishes"),
    (built("lost", view(phase="Running", lost_message="Redis lost it"), None), "Failed",
     "Degraded", "Redis lost it"),
]


@pytest.mark.parametrize(("made", "kstatus", "argocd", "message"), BUILT,
                         ids=[c[0]["metadata"]["name"] for c in BUILT])
def test_health_of_the_status_the_operator_builds(made: dict[str, Any], kstatus: str,
                                                  argocd: str, message: str) -> None:
    [got] = gitops_health([made])
    assert got.kstatus.status == kstatus, (got, made["status"])
    assert got.argocd is not None and got.argocd.status == argocd, (got, made["status"])
    assert message in got.argocd.message, (got, made["status"])
