"""Worker Deployments on the cluster: one per queue, and never someone else's."""

from __future__ import annotations

import pytest

from kflow.devkit.operator import Scenario
from kflow.kube.scaler import deployment_name
from tests.e2e.test_operator_workers import worker_queue

pytestmark = [pytest.mark.cluster]

POOL = {"min": 0, "max": 2, "nodesPerWorker": 5, "idleSeconds": 5}
SHARED = "orders-ingest-from-the-warehouse-system-of-region-"  # 50 characters


def _foreign_deployment(name: str) -> dict[str, object]:
    labels = {"app": "web"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "web", "image": "registry.k8s.io/pause:3.9"}]}}}}


def test_pools_are_one_per_queue_and_a_foreign_deployment_is_left_alone(
        scenario: Scenario) -> None:
    ns = scenario.namespace
    taken = deployment_name("taken")
    scenario.kube.apply(_foreign_deployment(taken), ns)
    before = scenario.kube.json("deployment", taken, "-n", ns)
    scenario.apply(worker_queue(SHARED + "eu-west", "square", POOL),
                   worker_queue(SHARED + "us-east", "square", POOL),
                   worker_queue("taken", "square", POOL))

    def pools() -> dict[str, str]:
        items = scenario.kube.json("deployments", "-n", ns).get("items") or []
        return {d["metadata"]["name"]: d["metadata"].get("labels", {}).get("kflow.dev/queue", "")
                for d in items}

    scenario.wait_for("two pools for the two long queues", lambda: len(
        [n for n in pools() if n.startswith("kflow-worker-orders")]) == 2, timeout=120)
    scenario.wait_for("the DeploymentNotOwned event on Queue taken",
                      lambda: bool(scenario.events("DeploymentNotOwned")), timeout=120)
    [event] = scenario.events("DeploymentNotOwned")
    assert event["involvedObject"]["kind"] == "Queue"
    assert event["involvedObject"]["name"] == "taken"
    assert f"Deployment {taken} exists but is not this Queue's worker pool" in event["message"]
    after = scenario.kube.json("deployment", taken, "-n", ns)
    assert after["metadata"]["labels"] == {"app": "web"}
    assert after["spec"] == before["spec"]
    assert not after["metadata"].get("ownerReferences")
