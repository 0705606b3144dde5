"""The kflow API as the chart installs it, reached through the API server's service proxy with
ServiceAccount tokens: a user sees and steers exactly what RBAC lets them (issue 12)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kflow.devkit.server import ProxiedApi, service_account_token
from tests.e2e.installed.conftest import Installed, gate_queue
from tests.e2e.installed.test_installed_chart import apply, job_queue, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def api(installed: Installed, token: str | None) -> ProxiedApi:
    return ProxiedApi(installed.inst.namespace, f"{installed.inst.fullname}-api", token,
                      installed.kube.kubeconfig)


def flow(name: str, check_queue: str) -> dict[str, Any]:
    """`top` over `check` (one attempt each), `check` on `check_queue`."""
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow", "metadata": {"name": name},
            "spec": {"defaults": {"attempts": 1}, "nodes": [
                {"name": "top", "queue": "optional", "data": {}, "children": [
                    {"name": "check", "queue": check_queue, "data": {}}]}]}}


@pytest.fixture(scope="module")
def flows(installed: Installed) -> Installed:
    """Two flows run to their end in the release's namespace A: `good` succeeded, `bad`
    failed at its gate (it succeeds when retried once the gate is open)."""
    apply(installed, job_queue("critical", "critical_task"),
          job_queue("optional", "optional_task"), gate_queue("api-gate"),
          flow("good", "critical"), flow("bad", "api-gate"))
    good, bad = wait_phase(installed, "good"), wait_phase(installed, "bad")
    assert good["phase"] == "Succeeded", good
    assert bad["phase"] == "Failed", bad
    return installed


@pytest.fixture(scope="module")
def viewer(installed: Installed) -> ProxiedApi:
    """A ServiceAccount bound to `view` in namespace A only."""
    return api(installed, service_account_token(installed.kube, installed.flows, "viewer",
                                                "view", installed.flows))


@pytest.fixture(scope="module")
def editor(installed: Installed) -> ProxiedApi:
    """A ServiceAccount bound to `edit` in namespace A only."""
    return api(installed, service_account_token(installed.kube, installed.flows, "editor",
                                                "edit", installed.flows))


def test_no_token_is_401_and_health_needs_none(installed: Installed) -> None:
    anonymous = api(installed, None)

    status, body = anonymous.request("GET", f"/api/v1/namespaces/{installed.flows}/flows")
    assert status == 401 and body["reason"] == "Unauthorized", body
    assert anonymous.request("GET", "/healthz") == (200, "ok")
    status, body = api(installed, "not-a-token").request("GET", "/api/v1/whoami")
    assert status == 401, body


def test_view_in_a_reads_its_flows_and_nodes(flows: Installed, viewer: ProxiedApi) -> None:
    a = f"/api/v1/namespaces/{flows.flows}/flows"

    status, me = viewer.request("GET", "/api/v1/whoami")
    assert status == 200 and me["username"] == f"system:serviceaccount:{flows.flows}:viewer"
    status, listing = viewer.request("GET", a)
    assert status == 200, listing
    assert {f["name"]: f["phase"] for f in listing["items"]} == {"good": "Succeeded",
                                                                "bad": "Failed"}
    status, good = viewer.request("GET", f"{a}/good")
    assert status == 200, good
    assert (good["total"], good["done"], good["roots"]) == (2, 2, ["top"])
    status, nodes = viewer.request("GET", f"{a}/good/nodes")
    assert status == 200 and nodes["continue"] is None, nodes
    assert {n["name"]: (n["state"], n["result"]) for n in nodes["items"]} == {
        "top": ("completed", {"ok": True}), "check": ("completed", {"ok": True, "attempts": 1})}
    # The failed attempt's container log, kept with the flow after its pod is gone.
    deadline = time.monotonic() + 60
    while True:
        status, check = viewer.request("GET", f"{a}/bad/nodes/check")
        logs = [t["log"] for t in check.get("attempts", [])]
        if any("the gate is closed" in t for t in logs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 200 and any("the gate is closed" in t for t in logs), check
    status, check = viewer.request("GET", f"{a}/bad/nodes/check")
    assert status == 200, check
    assert (check["state"], check["attempt"], check["parents"]) == ("failed", 1, ["top"])
    assert check["error"]
    status, failed = viewer.request("GET", f"{a}/bad/nodes?state=failed")
    # `top` failed with it (failParent): only the failed nodes, both of them.
    assert sorted(n["name"] for n in failed["items"]) == ["check", "top"]
    # The event stream of a finished flow: its summary, then the end (streamed by the proxy).
    status, stream = viewer.request("GET", f"{a}/good/events")
    assert status == 200 and "event: flow" in stream and "event: end" in stream, stream


def test_view_in_a_is_403_in_b_and_cannot_steer_in_a(flows: Installed,
                                                     viewer: ProxiedApi) -> None:
    status, body = viewer.request("GET", f"/api/v1/namespaces/{flows.other}/flows")
    assert status == 403 and body["reason"] == "Forbidden", body
    assert f'"{flows.other}"' in body["error"] and "list" in body["error"]
    status, body = viewer.request("GET", f"/api/v1/namespaces/{flows.other}/flows/good")
    assert status == 403, body

    status, body = viewer.request("POST", f"/api/v1/namespaces/{flows.flows}/flows/bad/retry")
    assert status == 403 and "patch" in body["error"], body
    status, body = viewer.request("DELETE", f"/api/v1/namespaces/{flows.flows}/flows/bad")
    assert status == 403 and "delete" in body["error"], body
    assert flows.kube.json("flow", "bad", "-n", flows.flows)["status"]["phase"] == "Failed"


def test_edit_in_a_retries_the_failed_node_and_it_runs_again(flows: Installed,
                                                            editor: ProxiedApi) -> None:
    a = f"/api/v1/namespaces/{flows.flows}/flows"

    status, body = editor.request("POST", f"{a}/good/retry")
    assert status == 409 and body["reason"] == "Conflict", body  # nothing failed there
    flows.open_gate("api-gate")
    status, body = editor.request("POST", f"{a}/bad/retry")
    assert status == 200 and body["name"] == "bad", body
    deadline = time.monotonic() + 240
    while True:  # the status says Failed until the operator has taken the retry
        status, bad = editor.request("GET", f"{a}/bad")
        if bad.get("phase") == "Succeeded" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert bad["phase"] == "Succeeded", bad
    status, check = editor.request("GET", f"{a}/bad/nodes/check")
    # A retry gives the node fresh attempts: this is attempt 1 of the new run.
    assert (check["state"], check["attempt"], check["result"]) == (
        "completed", 1, {"ok": True, "attempts": 1}), check
    status, body = editor.request("GET", f"/api/v1/namespaces/{flows.other}/flows")
    assert status == 403, body
