"""Flows too large for `kubectl apply` still reach Kubernetes through the submit path."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kflow.devkit.cluster import LocalCluster
from kflow.devkit.operator import Kube, OperatorWorld

pytestmark = pytest.mark.cluster


def fan_out(name: str, nodes: int) -> dict[str, Any]:
    leaves = [f"process-item-{i:05d}" for i in range(nodes - 1)]
    return {
        "apiVersion": "kflow.dev/v1alpha1", "kind": "Flow", "metadata": {"name": name},
        "spec": {"suspend": True,
                 "nodes": [{"name": "aggregate-results", "queue": "aggregator",
                            "children": leaves},
                           *({"name": leaf, "queue": "item-processor"} for leaf in leaves)]},
    }


@pytest.fixture
def kube(kube_cluster: LocalCluster, tmp_path: Path) -> Iterator[tuple[Kube, str]]:
    kube = Kube(run=kube_cluster.kubectl, kubeconfig=kube_cluster.kubeconfig,
                kubectl=str(kube_cluster.bin_dir / "kubectl"))
    OperatorWorld(kube, "redis://127.0.0.1:1", tmp_path).install_crds()
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    kube("create", "namespace", namespace)
    yield kube, namespace
    kube("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_flow_over_256_kib_is_created_where_kubectl_apply_refuses_it(
        kube: tuple[Kube, str]) -> None:
    kubectl, namespace = kube
    flow = fan_out("wide", 3_500)
    assert len(json.dumps(flow, separators=(",", ":"))) > 256 * 1024
    refused = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(flow), check=False)
    assert refused.returncode != 0
    assert "may not be more than 262144 bytes" in refused.stderr
    kubectl.submit([flow], namespace)
    stored = kubectl.json("flow", "wide", "-n", namespace)
    assert len(stored["spec"]["nodes"]) == 3_500
