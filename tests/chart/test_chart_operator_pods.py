"""The chart installed for real, as a user installs it: the operator Deployment and the bundled
Redis as pods, then `helm test` through them.

The release serves only its own namespace (namespace RBAC), which enforces Pod Security
`restricted`; the images are the local cluster's (tests/cluster builds them), and the Redis
volume is a hostPath on this machine, the cluster's only node (redis.persistence.hostPath).
Checked: two Ready operator replicas, the webhook refusing a cycle through its Service,
`helm test`'s Flow succeeding, the metrics Service's endpoints, no permission refused beyond
kopf's two cluster-wide reads, no persistence warning, and a Redis write surviving the Redis
pod's deletion.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kflow.devkit.install import load_images
from kflow.devkit.operator import Kube
from tests.chart.conftest import CHART, Helm

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

IMAGES = {"operator": "localhost/kflow-operator:dev", "runner": "localhost/kflow-runner:dev",
          "redis": "localhost/kflow-redis:dev"}


@pytest.fixture
def redis_volume(kube: Kube) -> Iterator[Path]:
    """A directory for the Redis volume, owned by the pods' uid (as the chart's README says)."""
    path = Path(tempfile.mkdtemp(prefix="kflow-chart-redis-", dir="/var/tmp"))
    os.chown(path, 65532, 65532)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def node_images(kube: Kube) -> str:
    return kube("get", "nodes", "-o", "jsonpath={.items[*].status.images[*].names}").stdout


def test_the_installed_chart_runs_restricted_and_helm_test_passes(
        helm: Helm, kube: Kube, redis_volume: Path, tmp_path: Path) -> None:
    # `make cluster-up` loads only the images every test needs; on a fresh machine these are
    # built here (cached afterwards), as the installed e2e tests build them. The kubelet
    # reports a newly loaded image in its node status within seconds.
    load_images(*IMAGES)
    deadline = time.monotonic() + 120
    while (missing := [i for i in IMAGES.values() if i not in node_images(kube)]) and \
            time.monotonic() < deadline:
        time.sleep(2)
    if missing:
        pytest.fail(f"{missing} not in the cluster after loading them (tests/cluster)")
    release, namespace = f"kf{uuid.uuid4().hex[:6]}", f"kflow-pods-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-kflow"
    env = {"KUBECONFIG": str(kube.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config"),
           "HELM_DATA_HOME": str(tmp_path / "data")}
    operator_image, runner_image = (IMAGES[name].rsplit(":", 1)
                                    for name in ("operator", "runner"))
    values = {"watchNamespaces": [namespace], "rbac": {"scope": "namespace"},
              "statusIntervalSeconds": 0.5,
              "image": {"repository": operator_image[0], "tag": operator_image[1],
                        "pullPolicy": "Never"},
              "redis": {"deploy": True, "image": IMAGES["redis"],
                        "persistence": {"hostPath": str(redis_volume), "size": "256Mi"}},
              "tests": {"runnerImage": {"repository": runner_image[0],
                                        "tag": runner_image[1]},
                        "timeoutSeconds": 150}}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    kube("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest"}}}))
    try:
        helm.run("install", release, str(CHART), "-n", namespace,
                 "-f", str(tmp_path / "values.yaml"), env=env)

        # Redis and both operator replicas become Ready: admitted as restricted, the
        # readiness probes answer.
        for deployment in (f"{fullname}-redis", fullname):
            rolled = kube("rollout", "status", f"deployment/{deployment}", "-n", namespace,
                          "--timeout=180s", check=False, timeout=200)
            assert rolled.returncode == 0, \
                rolled.stdout + rolled.stderr + pod_report(kube, namespace)
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
        # The bundled Redis persists, so the operator has nothing to warn about.
        assert "has no persistence" not in logs, logs[-3000:]

        # A write survives the Redis pod: the append-only file is on the volume.
        redis_cli(kube, namespace, fullname, "SET", "kflow:chart-test", "kept")
        old_pod = redis_pod(kube, namespace)
        kube("delete", "pod", old_pod, "-n", namespace, "--wait=true", timeout=90)
        rolled = kube("rollout", "status", f"deployment/{fullname}-redis", "-n", namespace,
                      "--timeout=120s", check=False, timeout=140)
        assert rolled.returncode == 0, rolled.stderr + pod_report(kube, namespace)
        assert redis_pod(kube, namespace) != old_pod
        assert redis_cli(kube, namespace, fullname, "GET", "kflow:chart-test") == "kept"
    finally:
        kube("delete", "flows,queues", "--all", "-n", namespace, "--timeout=60s", check=False,
             timeout=90)
        helm.run("uninstall", release, "-n", namespace, "--timeout", "60s", check=False,
                 env=env)
        kube("delete", "namespace", namespace, "--wait=true", "--ignore-not-found",
             "--timeout=120s", check=False, timeout=150)
        # The claim and the volume are kept by `helm uninstall` (the data outlives the release).
        kube("delete", "pv", f"{fullname}-redis-{namespace}"[:63].rstrip("-"),
             "--ignore-not-found", "--wait=false", check=False)


def redis_pod(kube: Kube, namespace: str) -> str:
    pods = kube.json("pods", "-n", namespace, "-l", "app.kubernetes.io/component=redis")
    live = [pod["metadata"]["name"] for pod in pods["items"]
            if not pod["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, live
    return live[0]


def redis_cli(kube: Kube, namespace: str, fullname: str, *command: str) -> str:
    """redis-cli in the Redis container (its REDISCLI_AUTH is the generated password)."""
    return kube("exec", "-n", namespace, f"deploy/{fullname}-redis", "--", "redis-cli",
                *command).stdout.strip()


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
