"""The generated CRDs as the real kube-apiserver sees them: accepted, and enforcing their rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]

VALID_FLOW: dict[str, Any] = {
    "apiVersion": "kflow.dev/v1alpha1",
    "kind": "Flow",
    "metadata": {"name": "order-a17"},
    "spec": {
        # Suspended, so that an operator watching the cluster dispatches nothing.
        "suspend": True,
        "defaults": {"attempts": 3, "backoff": {"type": "exponential", "delay": "1s"}},
        "ttlSecondsAfterFinished": 600,
        "nodes": [
            {
                "name": "send-confirmation",
                "queue": "order-confirmation",
                "data": {"orderId": "A-17", "lines": [{"sku": "x", "qty": 2}]},
                "children": [
                    {
                        "name": "fulfill-order",
                        "queue": "order-fulfillment",
                        "children": ["process-payment"],
                    }
                ],
            },
            {
                "name": "process-payment",
                "queue": "payment",
                "opts": {
                    "attempts": 5,
                    "priority": 1,
                    "timeout": "2m",
                    "delay": 500,
                    "backoff": 1000,
                    "failParentOnFailure": False,
                },
            },
        ],
    },
}

VALID_QUEUE: dict[str, Any] = {
    "apiVersion": "kflow.dev/v1alpha1",
    "kind": "Queue",
    "metadata": {"name": "payment"},
    "spec": {
        "mode": "Worker",
        "concurrency": 10,
        "rateLimit": {"max": 100, "per": "1m"},
        "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
        "workers": {"min": 0, "max": 5, "nodesPerWorker": 2, "idleSeconds": 60},
    },
}


@pytest.fixture(scope="module")
def crds(kube_cluster: Any) -> Any:
    """Apply both CRDs (never deleted: other tests' objects live in them) and wait until served."""
    kube_cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    for name in ("flows.kflow.dev", "queues.kflow.dev"):
        kube_cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s", timeout=90
        )
    return kube_cluster


def dry_run(cluster: Any, namespace: str, doc: dict[str, Any]) -> Any:
    return cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(doc), check=False
    )


def rejected(cluster: Any, namespace: str, doc: dict[str, Any]) -> str:
    proc = dry_run(cluster, namespace, doc)
    assert proc.returncode != 0, f"accepted:\n{json.dumps(doc, indent=1)}\n{proc.stdout}"
    return str(proc.stderr)


def flow_with_opts(opts: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(VALID_FLOW)
    doc["spec"]["nodes"][1]["opts"] = opts
    return doc


def test_crds_are_established_with_their_names(crds: Any) -> None:
    resources = crds.kubectl("api-resources", "--api-group=kflow.dev", "-o", "wide").stdout
    assert "flows" in resources and "fl" in resources and "kflow" in resources
    assert "queues" in resources and "kq" in resources


def test_valid_flow_and_queue_are_accepted(crds: Any, kube_namespace: str) -> None:
    for doc in (VALID_FLOW, VALID_QUEUE):
        proc = dry_run(crds, kube_namespace, doc)
        assert proc.returncode == 0, proc.stderr
        assert "created (server dry run)" in proc.stdout


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({"attempts": -1}, "spec.nodes[1].opts.attempts"),
        ({"attempts": "three"}, "spec.nodes[1].opts.attempts"),
        ({"priority": 2_097_153}, "spec.nodes[1].opts.priority"),
        ({"onFailure": "explode"}, "spec.nodes[1].opts.onFailure"),
        ({"delay": "soon"}, "spec.nodes[1].opts.delay"),
        ({"delay": -5}, "spec.nodes[1].opts.delay"),
        (
            {"failParentOnFailure": True, "ignoreDependencyOnFailure": True},
            "set at most one of failParentOnFailure",
        ),
        (
            {"onFailure": "ignore", "removeDependencyOnFailure": True},
            "disagree; set only onFailure",
        ),
    ],
)
def test_invalid_flow_options_are_rejected_naming_the_field(
    crds: Any, kube_namespace: str, opts: dict[str, Any], expected: str
) -> None:
    stderr = rejected(crds, kube_namespace, flow_with_opts(opts))
    assert expected in stderr
    if not expected.startswith("spec."):
        assert "spec.nodes[1].opts" in stderr


def test_wrong_types_and_duplicate_names_are_rejected(crds: Any, kube_namespace: str) -> None:
    doc = copy.deepcopy(VALID_FLOW)
    doc["spec"]["nodes"][1]["queue"] = 7
    assert "spec.nodes[1].queue" in rejected(crds, kube_namespace, doc)
    doc = copy.deepcopy(VALID_FLOW)
    doc["spec"]["nodes"].append({"name": "process-payment", "queue": "payment"})
    stderr = rejected(crds, kube_namespace, doc)
    assert "spec.nodes[2]" in stderr and "Duplicate value" in stderr
    doc = copy.deepcopy(VALID_FLOW)
    doc["spec"]["nodes"][0]["queue"] = "Not_A_Name"
    assert "spec.nodes[0].queue" in rejected(crds, kube_namespace, doc)


def flow_with_for_each(for_each: Any, **node: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID_FLOW)
    doc["spec"]["nodes"][1] = {"name": "process-payment", "queue": "payment",
                               "forEach": for_each, **node}
    return doc


def test_a_hundred_thousand_node_fan_out_is_a_few_lines_the_api_server_accepts(
        crds: Any, kube_namespace: str) -> None:
    doc = flow_with_for_each({"count": 100_000})
    assert len(json.dumps(doc)) < 2_000  # a 20,000-node Flow written out is 958 KB
    proc = dry_run(crds, kube_namespace, doc)
    assert proc.returncode == 0, proc.stderr
    for for_each in ({"from": "fulfill-order", "path": "orders.0.lines"},
                     {"items": ["a", {"b": 1}, 3, None]}):
        proc = dry_run(crds, kube_namespace, flow_with_for_each(for_each))
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("for_each", "expected"),
    [
        ({"from": "fulfill-order", "count": 3}, "set exactly one of from"),
        ({"count": 3, "path": "files"}, "path reads into the value of the from node"),
        ({"count": 1_000_001}, "spec.nodes[1].forEach.count"),
        ({"count": -1}, "spec.nodes[1].forEach.count"),
        ({"from": "Not a node!"}, "spec.nodes[1].forEach.from"),
        ({"from": "fulfill-order", "path": "a..b"}, "spec.nodes[1].forEach.path"),
        ({"items": "abc"}, "spec.nodes[1].forEach.items"),
        ({"each": 3}, 'unknown field "spec.nodes[1].forEach.each"'),
    ],
)
def test_malformed_for_each_is_rejected_naming_the_field(
        crds: Any, kube_namespace: str, for_each: dict[str, Any], expected: str) -> None:
    assert expected in rejected(crds, kube_namespace, flow_with_for_each(for_each))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"mode": "Lambda"}, "spec.mode"),
        ({"mode": "Worker"}, "spec.workers"),
        ({"mode": "Worker", "workers": {"min": 5, "max": 2}}, "spec.workers.min"),
        ({"concurrency": 0}, "spec.concurrency"),
        ({"rateLimit": {"max": 1, "per": "1 minute"}}, "spec.rateLimit.per"),
    ],
)
def test_invalid_queues_are_rejected_naming_the_field(
    crds: Any, kube_namespace: str, spec: dict[str, Any], expected: str
) -> None:
    doc = {**VALID_QUEUE, "spec": spec}
    assert expected in rejected(crds, kube_namespace, doc)


def test_spec_is_immutable_except_suspend_and_cancel(crds: Any, kube_namespace: str) -> None:
    crds.apply(VALID_FLOW, namespace=kube_namespace)
    name = VALID_FLOW["metadata"]["name"]

    def patch(body: dict[str, Any]) -> Any:
        return crds.kubectl(
            "patch",
            "flow",
            name,
            "-n",
            kube_namespace,
            "--type=merge",
            "--dry-run=server",
            "-p",
            json.dumps({"spec": body}),
            check=False,
        )

    nodes = copy.deepcopy(VALID_FLOW["spec"]["nodes"])
    nodes[1]["opts"]["attempts"] = 9
    changed = patch({"nodes": nodes})
    assert changed.returncode != 0 and "spec.nodes" in changed.stderr
    assert "immutable" in changed.stderr

    changed = patch({"defaults": {"attempts": 1}})
    assert changed.returncode != 0 and "spec.defaults" in changed.stderr
    changed = patch({"ttlSecondsAfterFinished": None})
    assert changed.returncode != 0 and "spec.ttlSecondsAfterFinished" in changed.stderr

    assert patch({"suspend": False}).returncode == 0
    cancel = crds.kubectl(
        "patch",
        "flow",
        name,
        "-n",
        kube_namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"cancel": True}}),
    )
    assert cancel.returncode == 0
    undo = patch({"cancel": False})
    assert undo.returncode != 0 and "spec.cancel" in undo.stderr
