"""The chart's operator Deployment running for real, then `helm test` through it.

The cluster has no operator image, so the release runs the runner image (it holds the same
kflow) with its command set to `kflow operator` by one patch after `helm install`; everything
else is the chart's: two replicas under the chart's ServiceAccount and namespace RBAC, probes,
read-only root filesystem, in a namespace that enforces Pod Security `restricted`, the
webhook, the metrics Service, the pods' Redis Secret. Redis is this machine's, at the address
pods reach (the bundled one needs an image the cluster cannot pull).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kflow.cli.redis_server import free_port, start, stop
from kflow.devkit.operator import Kube
from tests.chart.conftest import CHART, Helm

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RUNNER = "localhost/kflow-runner:dev"


@pytest.fixture
def pod_reachable_redis(kube: Kube) -> Iterator[str]:
    """A redis-server on the address the API server advertises to pods (the local cluster's
    bridge on this machine), reachable from pods and from here."""
    slices = kube.json("endpointslices", "-n", "default",
                       "-l", "kubernetes.io/service-name=kubernetes")
    address = slices["items"][0]["endpoints"][0]["addresses"][0]
    with tempfile.TemporaryDirectory(prefix="kflow-chart-redis-") as tmp:
        port = free_port()
        proc = start(port, Path(tmp), "--bind", "127.0.0.1", address, "--protected-mode", "no",
                     "--appendonly", "yes")
        try:
            yield f"redis://{address}:{port}/0"
        finally:
            stop([proc])


def test_the_operator_deployment_runs_restricted_and_helm_test_passes(
        helm: Helm, kube: Kube, pod_reachable_redis: str, tmp_path: Path) -> None:
    images = kube("get", "nodes", "-o", "jsonpath={.items[*].status.images[*].names}").stdout
    if RUNNER not in images:
        pytest.fail(f"{RUNNER} is not in the cluster: make cluster-images (tests/cluster)")
    release, namespace = f"kf{uuid.uuid4().hex[:6]}", f"kflow-pods-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-kflow"
    env = {"KUBECONFIG": str(kube.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config"),
           "HELM_DATA_HOME": str(tmp_path / "data")}
    repository, tag = RUNNER.rsplit(":", 1)
    values = {"watchNamespaces": [namespace], "rbac": {"scope": "namespace"},
              "redis": {"url": pod_reachable_redis}, "statusIntervalSeconds": 0.5,
              "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
              "tests": {"runnerImage": {"repository": repository, "tag": tag},
                        "timeoutSeconds": 150}}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    kube("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest"}}}))
    try:
        helm.run("install", release, str(CHART), "-n", namespace,
                 "-f", str(tmp_path / "values.yaml"), env=env)
        kube("patch", "deployment", fullname, "-n", namespace, "--type=json", "-p", json.dumps([
            {"op": "add", "path": "/spec/template/spec/containers/0/command",
             "value": ["kflow", "operator"]}]))

        # Both replicas become Ready: admitted as restricted, and the readiness probe answers.
        rolled = kube("rollout", "status", f"deployment/{fullname}", "-n", namespace,
                      "--timeout=180s", check=False, timeout=200)
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr + pod_report(kube, namespace)
        pods = kube.json("pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")
        ready = [pod["metadata"]["name"] for pod in pods["items"]
                 if not pod["metadata"].get("deletionTimestamp")
                 and any(c["type"] == "Ready" and c["status"] == "True"
                         for c in pod["status"].get("conditions") or [])]
        assert len(ready) == 2, pod_report(kube, namespace)

        # The webhook answers through its Service: an invalid Flow is refused at apply.
        bad = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
               "metadata": {"name": "bad", "namespace": namespace},
               "spec": {"nodes": [{"name": "a", "queue": "q", "children": ["b"]},
                                  {"name": "b", "queue": "q", "children": ["a"]}]}}
        refused = refused_by_webhook(kube, bad)
        assert "cycle" in refused, refused

        tested = subprocess.run([helm.binary, "test", release, "-n", namespace, "--logs",
                                 "--timeout", "5m"], capture_output=True, text=True,
                                timeout=360, env=env)

        report = f"{tested.stdout}{tested.stderr}\n{pod_report(kube, namespace)}"
        assert tested.returncode == 0, report
        assert "the child's result reached its parent" in tested.stdout, report
        # Only kopf's two cluster-wide reads are refused (namespace scope leaves them out).
        logs = kube("logs", "-n", namespace, "-l", "app.kubernetes.io/component=operator",
                    "--tail=-1", "--prefix", check=False).stdout
        refused_calls = set(re.findall(r'cannot (\w+ resource "[\w.]+")', logs))
        assert refused_calls <= {'list resource "namespaces"',
                                 'list resource "customresourcedefinitions"'}, report
        # The metrics Service reaches the operator's /metrics.
        endpoints = kube.json("endpointslices", "-n", namespace,
                              "-l", f"kubernetes.io/service-name={fullname}-metrics")
        ready = [e for item in endpoints["items"] for e in item.get("endpoints") or []
                 if e.get("conditions", {}).get("ready")]
        assert len(ready) == 2, endpoints
    finally:
        kube("delete", "flows,queues", "--all", "-n", namespace, "--timeout=60s", check=False,
             timeout=90)
        helm.run("uninstall", release, "-n", namespace, "--timeout", "60s", check=False,
                 env=env)
        kube("delete", "namespace", namespace, "--wait=false", "--ignore-not-found",
             check=False)


def refused_by_webhook(kube: Kube, flow: dict[str, object]) -> str:
    """The apply's error once the webhook answers (its Service may take a moment)."""
    deadline = time.monotonic() + 60
    while True:
        result = kube("create", "--dry-run=server", "-f", "-", input=json.dumps(flow),
                      check=False)
        if result.returncode != 0 and "denied the request" in result.stderr:
            return result.stderr
        assert time.monotonic() < deadline, f"the webhook never refused: {result.stderr}"
        time.sleep(2)


def pod_report(kube: Kube, namespace: str) -> str:
    pods = kube("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    events = kube("get", "events", "-n", namespace, "--sort-by=.lastTimestamp",
                  check=False).stdout
    logs = kube("logs", "-n", namespace, "-l", "app.kubernetes.io/component=operator",
                "--tail=30", "--prefix", check=False).stdout
    return f"--- pods ---\n{pods}\n--- events ---\n{events[-4000:]}\n--- logs ---\n{logs}"
