"""Node logs that outlive pods, the operator's side: which container is read, what a pod that
never started leaves instead, how a tail is cut, and the settings that bound it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from kubernetes import client
from pydantic import ValidationError

from kflow.kube.k8s import KubeApi
from kflow.kube.podlogs import CUT_NOTE, latest_pod, main_container, never_started, tail_text
from kflow.settings import DispatchSettings


def pod(name: str = "p", *, containers: tuple[str, ...] = ("main",),
        statuses: list[dict[str, Any]] | None = None, created: str = "2026-01-01T00:00:00Z",
        **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": [{"name": c} for c in containers]},
            "status": {"containerStatuses": statuses or [], **status}}


def test_the_main_container_is_read_else_the_first() -> None:
    assert main_container(pod(containers=("sidecar", "main"))) == "main"
    assert main_container(pod(containers=("worker", "sidecar"))) == "worker"
    assert main_container(pod(containers=())) is None


def test_the_latest_pod_decides() -> None:
    old = pod("old", created="2026-01-01T00:00:00Z")
    new = pod("new", created="2026-01-02T00:00:00Z")
    assert latest_pod([new, old]) is new
    assert latest_pod([]) is None


def test_a_pod_that_never_started_says_why_as_kubectl_describe_would() -> None:
    pulling = pod("etl-x", statuses=[{"name": "main", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}}}])
    assert never_started(pulling) == ('pod etl-x never started its container: '
                                      'ImagePullBackOff: Back-off pulling image "nope:1"\n')
    unscheduled = pod("etl-y", phase="Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient cpu."}])
    assert never_started(unscheduled) == ("pod etl-y never started its container: "
                                          "Unschedulable: 0/1 nodes are available: 1 "
                                          "Insufficient cpu.\n")
    # A sidecar's state is not the node's: only the main container counts.
    ran = pod(containers=("main", "proxy"), statuses=[
        {"name": "proxy", "state": {"waiting": {"reason": "ErrImagePull"}}},
        {"name": "main", "state": {"terminated": {"exitCode": 1}}}])
    assert never_started(ran) is None
    restarted = pod(statuses=[{"name": "main", "state": {"waiting": {"reason": "X"}},
                               "lastState": {"terminated": {"exitCode": 1}}}])
    assert never_started(restarted) is None


def test_a_tail_keeps_the_end_within_the_bound_and_says_it_was_cut() -> None:
    assert tail_text(b"short\n", 100, cut=False) == "short\n"
    log = b"".join(b"line %05d\n" % i for i in range(1000))
    kept = tail_text(log, 200, cut=False)
    assert kept.startswith(CUT_NOTE) and kept.endswith("line 00999\n")
    assert len(kept.encode()) <= 200
    # Fewer bytes than the bound, but only the last lines were asked for: still cut.
    assert tail_text(b"line 3\n", 200, cut=True) == CUT_NOTE + "line 3\n"


def test_a_tail_never_splits_a_character() -> None:
    log = ("é" * 500).encode()  # two bytes each
    for limit in (100, 101):
        kept = tail_text(log, limit, cut=False)
        assert len(kept.encode()) <= limit
        assert kept.removeprefix(CUT_NOTE) == "é" * len(kept.removeprefix(CUT_NOTE))


def test_pod_log_settings_bound_and_refuse_a_budget_below_one_log(
        monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = DispatchSettings()
    assert (defaults.pod_log_bytes, defaults.pod_log_flow_bytes) == (65_536, 33_554_432)
    monkeypatch.setenv("KFLOW_POD_LOG_BYTES", "0")
    monkeypatch.setenv("KFLOW_POD_LOG_FLOW_BYTES", "0")
    assert DispatchSettings().pod_log_bytes == 0  # off
    monkeypatch.setenv("KFLOW_POD_LOG_BYTES", "4096")
    monkeypatch.setenv("KFLOW_POD_LOG_FLOW_BYTES", "1000")
    with pytest.raises(ValidationError, match=r"KFLOW_POD_LOG_FLOW_BYTES \(1000\) is smaller "
                                              r"than KFLOW_POD_LOG_BYTES \(4096\)"):
        DispatchSettings()
    monkeypatch.setenv("KFLOW_POD_LOG_BYTES", "-1")
    with pytest.raises(ValidationError, match="pod_log_bytes"):
        DispatchSettings()


async def test_reading_a_pod_log_from_an_api_server_that_never_answers_fails() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        api = KubeApi(configuration=configuration, timeout=(0.5, 0.5))
        with pytest.raises(Exception, match=r"(?i)timed out"):
            await asyncio.wait_for(api.read_pod_log("ns", "p", "main", tail_lines=10,
                                                    limit_bytes=100), 60)
