"""The Helm chart's admission webhook: what it renders, what the API server accepts, and that
its certificate survives an upgrade.

helm is built from the Go module proxy by tests/cluster/scripts/build-helm.sh on first use
(about three minutes) and cached under ~/.cache/kflow.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kflow.devkit.checkout import REPO
from kflow.devkit.operator import Kube
from kflow.kube.admission import CRONFLOW_WEBHOOK, FLOW_WEBHOOK, QUEUE_WEBHOOK

pytestmark = [pytest.mark.slow]

CHART = REPO / "charts" / "kflow"
RELEASE, NAMESPACE = "t", "ops"
BASE_VALUES = ("--set", "redis.url=redis://redis.ops.svc:6379/0")


@pytest.fixture(scope="module")
def helm() -> str:
    script = REPO / "tests" / "cluster" / "scripts" / "build-helm.sh"
    built = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        pytest.skip(f"helm could not be built: {built.stderr[-2000:]}")
    return built.stdout.strip().splitlines()[-1]


def render(helm: str, *args: str, namespace: str = NAMESPACE,
           env: dict[str, str] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object of `helm template`."""
    result = subprocess.run([helm, "template", RELEASE, str(CHART), "-n", namespace,
                             *BASE_VALUES, *args], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr
    return {(doc["kind"], doc["metadata"]["name"]): doc
            for doc in yaml.safe_load_all(result.stdout) if doc}


def operator_container(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    pod = objects[("Deployment", f"{RELEASE}-kflow")]["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    container["_pod"] = pod
    return container


def test_the_chart_lints_strictly(helm: str) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART), *BASE_VALUES],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_webhook_objects_render_and_fit_together(helm: str, tmp_path: Path) -> None:
    objects = render(helm)

    secret = objects[("Secret", f"{RELEASE}-kflow-webhook-tls")]
    service = objects[("Service", f"{RELEASE}-kflow-webhook")]
    config = objects[("ValidatingWebhookConfiguration", f"{RELEASE}-kflow.kflow.dev")]
    container = operator_container(objects)
    # The serving certificate is signed by the CA the API server is told to trust, for the
    # Service's DNS name.
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    verified = subprocess.run(["openssl", "verify", "-CAfile", "ca.crt", "tls.crt"],
                              cwd=tmp_path, capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    text = subprocess.run(["openssl", "x509", "-in", "tls.crt", "-noout", "-text"], cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout
    assert f"DNS:{RELEASE}-kflow-webhook.{NAMESPACE}.svc" in text
    # One webhook per kind, at the operator's handler paths, through the Service.
    hooks = {hook["clientConfig"]["service"]["path"]: hook for hook in config["webhooks"]}
    assert set(hooks) == {f"/{FLOW_WEBHOOK}", f"/{QUEUE_WEBHOOK}", f"/{CRONFLOW_WEBHOOK}"}
    for hook in hooks.values():
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
        assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
        assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
        assert "namespaceSelector" not in hook
    assert hooks[f"/{FLOW_WEBHOOK}"]["rules"][0]["resources"] == ["flows"]
    assert hooks[f"/{FLOW_WEBHOOK}"]["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert hooks[f"/{QUEUE_WEBHOOK}"]["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert hooks[f"/{CRONFLOW_WEBHOOK}"]["rules"][0]["resources"] == ["cronflows"]
    # The operator serves on the port the Service targets, with the Secret mounted.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] == "webhook" and ports["webhook"] == 9443
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["KFLOW_WEBHOOK_ENABLED"] == "true" and env["KFLOW_WEBHOOK_PORT"] == "9443"
    mount = container["volumeMounts"][0]["mountPath"]
    assert env["KFLOW_WEBHOOK_CERT_FILE"] == f"{mount}/tls.crt"
    assert container["_pod"]["volumes"][0]["secret"]["secretName"] == \
        secret["metadata"]["name"]


def test_watched_namespaces_scope_the_webhook_and_it_can_be_turned_off(helm: str) -> None:
    scoped = render(helm, "--set", "watchNamespaces={etl,ml}",
                    "--set", "webhook.failurePolicy=Fail")
    config = scoped[("ValidatingWebhookConfiguration", f"{RELEASE}-kflow.kflow.dev")]
    for hook in config["webhooks"]:
        assert hook["failurePolicy"] == "Fail"
        assert hook["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["etl", "ml"]}]

    off = render(helm, "--set", "webhook.enabled=false")

    assert not [key for key in off if "webhook" in key[1].lower() or key[1].endswith("kflow.dev")]
    container = operator_container(off)
    assert not [e for e in container["env"] if e["name"].startswith("KFLOW_WEBHOOK_")]
    assert "volumeMounts" not in container and "volumes" not in container["_pod"]


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"kflow-chart-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", name)
    try:
        yield name
    finally:
        kube("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.cluster
def test_the_api_server_accepts_the_objects_and_an_upgrade_keeps_the_certificate(
        helm: str, kube: Kube, namespace: str) -> None:
    fresh = render(helm, namespace=namespace)
    # The webhook's objects and the Deployment that mounts its certificate.
    objects = [doc for (kind, name), doc in fresh.items()
               if "webhook" in name or kind in ("ValidatingWebhookConfiguration", "Deployment")]
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}
    accepted = kube("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump(listing), check=False)
    assert accepted.returncode == 0, accepted.stderr
    # As on an upgrade: the Secret exists, and the chart must reuse it, not mint a new CA.
    secret = fresh[("Secret", f"{RELEASE}-kflow-webhook-tls")]
    kube("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(secret))

    upgraded = render(helm, "--dry-run=server", namespace=namespace,
                      env={"KUBECONFIG": str(kube.kubeconfig), "HOME": str(Path.home()),
                           "PATH": "/usr/bin:/bin"})

    kept = upgraded[("Secret", f"{RELEASE}-kflow-webhook-tls")]["data"]
    assert kept == secret["data"]
    config = upgraded[("ValidatingWebhookConfiguration", f"{RELEASE}-kflow.kflow.dev")]
    assert {hook["clientConfig"]["caBundle"] for hook in config["webhooks"]} == {
        secret["data"]["ca.crt"]}
