"""A real `helm install`, `helm upgrade` and `helm uninstall` of the chart on the local cluster.

No pod needs to run (replicas=0: this test is about what Helm makes and keeps; the pods are
test_chart_operator_pods.py's), and the release serves only its own namespace with namespace
RBAC, so nothing it installs reaches other tests' objects. The bundled Redis is asked for, to
see its generated password survive an upgrade and, asked to (keepOnUninstall), its data
claim survive an uninstall (by default an uninstall leaves nothing but the CRDs:
tests/e2e/installed).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kflow.devkit.operator import Kube
from tests.chart.conftest import CHART, Helm

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


class Release:
    def __init__(self, helm: Helm, kube: Kube, home: Path) -> None:
        self.name = f"kf{uuid.uuid4().hex[:6]}"
        self.namespace = f"kflow-install-{uuid.uuid4().hex[:6]}"
        self.fullname = f"{self.name}-kflow"
        self.helm, self.kube = helm, kube
        self.env = {"KUBECONFIG": str(kube.kubeconfig), "PATH": "/usr/bin:/bin",
                    "HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"),
                    "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_DATA_HOME": str(home / "data")}
        self.values = ["--set", "redis.deploy=true", "--set", "replicas=0",
                       "--set", "redis.persistence.keepOnUninstall=true",
                       "--set", f"watchNamespaces={{{self.namespace}}}",
                       "--set", "rbac.scope=namespace"]

    def __call__(self, *args: str, check: bool = True) -> str:
        result = self.helm.run(*args, "-n", self.namespace, check=False, env=self.env)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    def get(self, kind: str, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.kube.json(kind, name, "-n", self.namespace)
        return got


@pytest.fixture
def release(helm: Helm, kube: Kube, tmp_path: Path) -> Iterator[Release]:
    made = Release(helm, kube, tmp_path)
    try:
        yield made
    finally:
        made("uninstall", made.name, "--wait", "--timeout", "60s", check=False)
        kube("delete", "namespace", made.namespace, "--wait=false", "--ignore-not-found",
             check=False)


def secret_value(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def test_install_upgrade_and_uninstall_keep_what_they_should(release: Release,
                                                             kube: Kube) -> None:
    notes = release("install", release.name, str(CHART), "--create-namespace", *release.values)

    # The notes say what was made and what to run next.
    assert f"Deployment {release.fullname}, 0 replica(s)" in notes
    assert f"Role and RoleBinding {release.fullname} in {release.namespace}" in notes
    assert f"helm test {release.name} -n {release.namespace} --logs" in notes
    for crd in ("flows.kflow.dev", "queues.kflow.dev", "kopfpeerings.kopf.dev"):
        kube("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    secret = release.get("secret", f"{release.fullname}-redis")
    password = secret_value(secret, "password")
    assert f"requirepass {password}" in secret_value(secret, "redis.conf")
    # Tenants are on with the bundled Redis: each namespace's pods Secret is the operator's
    # to make (with that namespace's own Redis user), not the chart's.
    assert "Tenants are on" in notes
    made = kube("get", "secrets", "-n", release.namespace, "-o", "name").stdout.split()
    assert "secret/kflow-redis" not in made
    assert release.get("kopfpeering", release.fullname)
    assert release.get("role", f"{release.fullname}-self")
    claim = release.get("pvc", f"{release.fullname}-redis")
    webhook_ca = release.get("secret", f"{release.fullname}-webhook-tls")["data"]["ca.crt"]

    release("upgrade", release.name, str(CHART), "--reuse-values", "--set", "leaseMs=20000")

    # lookup kept the generated password and the webhook's CA; the claim is the same one.
    upgraded = release.get("secret", f"{release.fullname}-redis")
    assert secret_value(upgraded, "password") == password
    assert release.get("secret", f"{release.fullname}-webhook-tls")["data"]["ca.crt"] == \
        webhook_ca
    operator = release.get("deployment", release.fullname)
    env = {item["name"]: item.get("value")
           for item in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KFLOW_LEASE_MS"] == "20000"
    assert release.get("pvc", f"{release.fullname}-redis")["metadata"]["uid"] == \
        claim["metadata"]["uid"]

    release("uninstall", release.name, "--wait", "--timeout", "60s")

    # The data outlives the release; the rest is gone.
    kept = release.get("pvc", f"{release.fullname}-redis")
    assert kept["metadata"]["uid"] == claim["metadata"]["uid"]
    left = kube("get", "deployments,secrets,roles,services", "-n", release.namespace,
                "-o", "json").stdout
    assert not [item["metadata"]["name"] for item in json.loads(left)["items"]
                if item["metadata"]["name"].startswith(release.fullname)]
