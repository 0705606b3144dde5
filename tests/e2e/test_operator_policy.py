"""The operator's pod policy on the cluster: a Queue whose template breaks it makes no pod, says
why in its Valid condition and an Event, and is served again once fixed.

The harness's pods need the host network and a host mount (kflow.devkit.manifests), which its
operator allows; what is refused here is a ServiceAccount the policy does not list.
"""

from __future__ import annotations

from typing import Any

import pytest

from kflow.devkit.manifests import flow, pod_template, queue
from kflow.devkit.operator import OperatorWorld, Scenario

pytestmark = [pytest.mark.cluster]

DEFAULT_CONTEXT = '{"allowPrivilegeEscalation": false}'


def with_account(doc: dict[str, Any], account: str | None) -> dict[str, Any]:
    if account is not None:
        doc["spec"]["template"]["spec"]["serviceAccountName"] = account
    return doc


def queue_valid(scenario: Scenario, name: str) -> dict[str, Any] | None:
    body = scenario.kube.json("queue", name, "-n", scenario.namespace)
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Valid"), None)


def wait_valid(scenario: Scenario, name: str, status: str) -> dict[str, Any]:
    scenario.wait_for(f"Queue {name} Valid={status}",
                      lambda: (queue_valid(scenario, name) or {}).get("status") == status,
                      timeout=60)
    found = queue_valid(scenario, name)
    assert found is not None
    return found


@pytest.fixture
def scenario(operator_world: OperatorWorld) -> Any:
    with operator_world.scenario(policy_service_accounts="runner",
                                 policy_default_security_context=DEFAULT_CONTEXT) as scenario:
        scenario.kube("create", "serviceaccount", "runner", "-n", scenario.namespace)
        yield scenario


def test_a_queue_breaking_the_policy_runs_nothing_until_fixed(scenario: Scenario) -> None:
    jobs = scenario.watch_jobs()
    scenario.apply(with_account(queue("q", "echo"), "builder"),
                   flow("f", [{"name": "a", "queue": "q"}]))

    valid = wait_valid(scenario, "q", "False")
    assert valid["reason"] == "PodPolicyViolation"
    assert f"Queue {scenario.namespace}/q: spec.template.spec.serviceAccountName: " \
           "ServiceAccount 'builder' is not allowed by the operator's pod policy " \
           "(podPolicy.serviceAccounts in the Helm values" in valid["message"]
    scenario.wait_for("a PodPolicyViolation Warning Event on the Queue", lambda: any(
        e["type"] == "Warning" and e["involvedObject"]["kind"] == "Queue"
        and "serviceAccountName" in e["message"]
        for e in scenario.events("PodPolicyViolation")), timeout=30)
    # The flow was taken in and its node waits, as on a missing Queue: nothing dispatched.
    scenario.wait_for("the flow's node to wait on queue q", lambda: any(
        c["type"] == "QueueMissing" and c["status"] == "True"
        for c in (scenario.get_flow("f").get("status") or {}).get("conditions") or []),
        timeout=60)
    assert scenario.jobs() == []
    assert jobs.created() == set()

    scenario.apply(with_account(queue("q", "echo"), "runner"))  # an allowed ServiceAccount

    body = scenario.wait_phase("f")
    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert wait_valid(scenario, "q", "True")["reason"] == "Valid"
    made = list(jobs.made().values())
    assert made, "the fixed Queue's node ran as a Job"
    for job in made:
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "runner"
        # The policy's default securityContext, given to the container that set none.
        assert pod["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False}


def test_a_worker_queue_that_comes_to_break_the_policy_loses_its_deployment(
        scenario: Scenario) -> None:
    template = pod_template(["tests.e2e.operator_pods.nodes:echo"])
    worker = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": "w"},
              "spec": {"mode": "Worker", "workers": {"min": 0, "max": 1},
                       "template": template}}
    scenario.apply(worker)
    wait_valid(scenario, "w", "True")

    def deployment_exists() -> bool:
        return scenario.kube("get", "deployment", "kflow-worker-w", "-n", scenario.namespace,
                             check=False).returncode == 0

    scenario.wait_for("the worker Deployment", deployment_exists, timeout=60)

    template["spec"]["hostPID"] = True
    scenario.apply(worker)

    valid = wait_valid(scenario, "w", "False")
    assert "spec.template.spec.hostPID is not allowed" in valid["message"]
    assert "podPolicy.allowHostPID" in valid["message"]
    scenario.wait_for("the worker Deployment to be removed", lambda: not deployment_exists(),
                      timeout=60)
