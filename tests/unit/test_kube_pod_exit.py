"""Which pod bodies settle an attempt as succeeded before its Job is marked Complete: the
main container ended with exit code 0 (or the pod Succeeded), and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.kube.jobs import pod_job_name, pod_succeeded


def _pod(*statuses: dict[str, Any], phase: str = "Running", deleting: bool = False,
         containers: tuple[str, ...] = ("main",), init: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "chain-1a2b3c4d-1-abcd-x7k2p",
                            "labels": {"batch.kubernetes.io/job-name": "chain-1a2b3c4d-1-abcd",
                                       "job-name": "chain-1a2b3c4d-1-abcd"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T19:00:00Z"
    status: dict[str, Any] = {"phase": phase, "containerStatuses": list(statuses)}
    if init is not None:
        status["initContainerStatuses"] = [init]
    return {"metadata": meta, "spec": {"containers": [{"name": n} for n in containers]},
            "status": status}


def _ended(name: str = "main", code: int = 0) -> dict[str, Any]:
    return {"name": name, "state": {"terminated": {
        "exitCode": code, "reason": "Completed" if code == 0 else "Error",
        "finishedAt": "2026-11-30T19:00:01Z"}}}


def _running(name: str = "main") -> dict[str, Any]:
    return {"name": name, "state": {"running": {"startedAt": "2026-11-30T19:00:00Z"}}}


@pytest.mark.parametrize("pod", [
    # The kubelet saw main exit 0; the pod's phase follows a moment later.
    _pod(_ended()),
    _pod(_ended(), phase="Succeeded"),
    # Another container keeps the pod running: the node's work (main) is done.
    _pod(_ended(), _running("log-shipper"), containers=("main", "log-shipper")),
    _pod(_running("log-shipper"), _ended(), containers=("log-shipper", "main")),
    # No container named main: the first one runs the node (as build_job picks).
    _pod(_ended("work"), containers=("work",)),
    # Deleted after it succeeded (the operator deletes the Job): still a success.
    _pod(_ended(), phase="Succeeded", deleting=True),
], ids=["main-exit-0", "phase-succeeded", "sidecar-still-running", "main-not-first",
        "first-container", "succeeded-then-deleted"])
def test_a_pod_whose_main_container_exited_0_has_succeeded(pod: dict[str, Any]) -> None:
    assert pod_succeeded(pod)


@pytest.mark.parametrize("pod", [
    _pod(),  # scheduled, no container status yet
    _pod({"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}},
         phase="Pending"),
    _pod(_running()),
    _pod(_ended(code=1)),
    _pod(_ended(code=1), phase="Failed"),
    _pod(_ended(code=75)),  # kflow-run could not reach Redis: the Job path's verdict
    # Only the init container ended; main has not started.
    _pod({"name": "main", "state": {"waiting": {"reason": "PodInitializing"}}},
         phase="Pending", init=_ended("setup")),
    # Another container ended with 0 while main still runs.
    _pod(_running(), _ended("log-shipper"), containers=("main", "log-shipper")),
    # Main exited 0 but another container failed the pod: the Job's conditions decide.
    _pod(_ended(), _ended("log-shipper", code=1), phase="Failed",
         containers=("main", "log-shipper")),
    # Being deleted (the Job deleted, the pod evicted) before main ended.
    _pod(_running(), deleting=True),
    _pod(deleting=True),
    _pod({"name": "main", "state": {"terminated": {"exitCode": 143, "reason": "Error"}}},
         deleting=True),
], ids=["no-status", "creating", "running", "exit-1", "failed", "redis-unreachable",
        "init-container-ended", "other-container-ended", "pod-failed-by-another",
        "deleting-while-running", "deleting-no-status", "deleting-killed"])
def test_a_pod_not_finished_with_exit_0_is_left_to_the_job(pod: dict[str, Any]) -> None:
    assert not pod_succeeded(pod)


def test_a_pod_names_its_job_by_the_job_controllers_label() -> None:
    assert pod_job_name(_pod(_ended())) == "chain-1a2b3c4d-1-abcd"
    legacy = _pod(_ended())
    del legacy["metadata"]["labels"]["batch.kubernetes.io/job-name"]
    assert pod_job_name(legacy) == "chain-1a2b3c4d-1-abcd"
    assert pod_job_name({"metadata": {"labels": {}}}) is None
