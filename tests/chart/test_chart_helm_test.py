"""`helm test` for real: the chart installed, an operator that has exactly the chart's RBAC, and
the test hook's two-node Flow running as Job pods of the runner image.

The cluster has no operator image, so the operator runs on this machine (replicas=0 in the
chart) under a token of the chart's ServiceAccount: what it may do is what the chart grants
(namespace scope, the strictest), and nothing more. The test pod and the nodes run the runner
image, which holds kflow and the kubernetes client as the operator image does. Redis runs on
this machine at the API server's address, which pods reach.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kflow.cli.redis_server import free_port, start, stop
from kflow.devkit.checkout import REPO
from kflow.devkit.operator import Kube, OperatorProcess
from tests.chart.conftest import CHART, Helm

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RUNNER = "localhost/kflow-runner:dev"


def host_address(kube: Kube) -> str:
    """The address the API server advertises to pods (the local cluster's bridge on this
    machine): a server listening there is reachable from pods and from here."""
    endpoints = kube.json("endpointslices", "-n", "default",
                          "-l", "kubernetes.io/service-name=kubernetes")
    address: str = endpoints["items"][0]["endpoints"][0]["addresses"][0]
    return address


@pytest.fixture
def pod_reachable_redis(kube: Kube) -> Iterator[str]:
    address = host_address(kube)
    with tempfile.TemporaryDirectory(prefix="kflow-chart-redis-") as tmp:
        port = free_port()
        proc = start(port, Path(tmp), "--bind", "127.0.0.1", address, "--protected-mode", "no")
        try:
            yield f"redis://{address}:{port}/0"
        finally:
            stop([proc])


def service_account_kubeconfig(kube: Kube, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a short-lived token)."""
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    token = kube("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": account,
                                                 "namespace": namespace}}],
    }))
    return path


def test_helm_test_runs_a_flow_through_an_operator_holding_only_the_charts_rbac(
        helm: Helm, kube: Kube, pod_reachable_redis: str, tmp_path: Path) -> None:
    images = kube("get", "nodes", "-o", "jsonpath={.items[*].status.images[*].names}").stdout
    if RUNNER not in images:
        pytest.fail(f"{RUNNER} is not in the cluster: make cluster-images (tests/cluster)")
    release, namespace = f"kf{uuid.uuid4().hex[:6]}", f"kflow-helmtest-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-kflow"
    env = {"KUBECONFIG": str(kube.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config"),
           "HELM_DATA_HOME": str(tmp_path / "data")}
    repository, tag = RUNNER.rsplit(":", 1)
    values = {"replicas": 0, "watchNamespaces": [namespace], "rbac": {"scope": "namespace"},
              "webhook": {"enabled": False}, "redis": {"url": pod_reachable_redis},
              "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
              "tests": {"runnerImage": {"repository": repository, "tag": tag},
                        "timeoutSeconds": 150}}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    operator = OperatorProcess(env={}, log_path=tmp_path / "operator.log")
    try:
        helm.run("install", release, str(CHART), "-n", namespace, "--create-namespace",
                 "-f", str(tmp_path / "values.yaml"), env=env)
        kubeconfig = service_account_kubeconfig(kube, namespace, fullname,
                                                tmp_path / "sa.kubeconfig")
        operator.env = {
            **os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(REPO / "operator"),
            "KFLOW_REDIS_URL": pod_reachable_redis, "KFLOW_NAMESPACES": namespace,
            "KFLOW_PEERING_NAME": fullname,  # the KopfPeering the chart made
            "KFLOW_REDIS_SECRET_NAME": "kflow-redis", "KFLOW_STATUS_INTERVAL_SECONDS": "0.5",
        }
        operator.start()

        tested = subprocess.run([helm.binary, "test", release, "-n", namespace, "--logs",
                                 "--timeout", "5m"], capture_output=True, text=True,
                                timeout=360, env=env)

        report = f"{tested.stdout}{tested.stderr}\n--- operator log ---\n{operator.log_tail(80)}"
        assert tested.returncode == 0, report
        assert "Phase:          Succeeded" in tested.stdout, report
        assert "the child's result reached its parent" in tested.stdout, report
        # The operator never needed a permission the chart does not grant. The only refusals
        # are kopf's two cluster-wide reads, which namespace scope leaves out on purpose (kopf
        # then serves the listed namespaces and the CRDs it found at start).
        refused = {match for line in operator.log_tail(5000).splitlines()
                   if "Forbidden" in line
                   for match in re.findall(r'cannot (\w+ resource "[\w.]+")', line)}
        assert refused <= {'list resource "namespaces"',
                           'list resource "customresourcedefinitions"'}, report
    finally:
        # Flows carry the operator's finalizer: take them away while it still runs.
        kube("delete", "flows,queues", "--all", "-n", namespace, "--timeout=60s", check=False,
             timeout=90)
        operator.stop()
        helm.run("uninstall", release, "-n", namespace, "--timeout", "60s", check=False,
                 env=env)
        kube("delete", "namespace", namespace, "--wait=false", "--ignore-not-found",
             check=False)
