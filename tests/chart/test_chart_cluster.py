"""The chart against the real API server, no operator pod needed: what its RBAC grants
(`kubectl auth can-i --list` as the operator's ServiceAccount, both rbac.scope modes), that
every pod it makes is admitted under Pod Security `restricted`, and that the API server takes
every object it renders."""

from __future__ import annotations

import importlib.util
import json
import re
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from kflow.devkit.operator import Kube
from tests.chart.conftest import CHART, Helm, Rendered

pytestmark = [pytest.mark.cluster]

URL = "redis.url=redis://redis.example:6379/0"

# What the operator may do in a namespace it serves, as `kubectl auth can-i --list` names it.
SERVED = {
    "flows.kflow.dev": {"list", "watch", "create", "patch", "delete"},
    "queues.kflow.dev": {"list", "watch", "patch"},
    "cronflows.kflow.dev": {"list", "watch", "patch"},
    "flowtemplates.kflow.dev": {"get", "list", "watch"},
    "flows.kflow.dev/status": {"patch"},
    "flowtemplates.kflow.dev/status": {"patch"},
    "queues.kflow.dev/status": {"patch"},
    "cronflows.kflow.dev/status": {"patch"},
    "flows.kflow.dev/finalizers": {"update"},
    "jobs.batch": {"list", "watch", "create", "delete"},
    "pods": {"list", "watch"},
    "pods/log": {"get"},
    "deployments.apps": {"get", "create", "update", "delete"},
    "deployments.apps/scale": {"patch"},
    "events": {"create", "patch"},
    "secrets": {"get"},  # rbac.readSecrets: the webhook URL of a Flow's spec.notify
}
PEERINGS = {"kopfpeerings.kopf.dev": {"list", "watch", "patch"}}
CLUSTER_ONLY = {
    "clusterkopfpeerings.kopf.dev": {"list", "watch", "patch"},
    "customresourcedefinitions.apiextensions.k8s.io": {"list", "watch"},
}
# Granted to every authenticated user by the cluster's default roles, not by the chart.
DEFAULTS = re.compile(r"^self\w+\.(authorization|authentication)\.k8s\.io$")


def short_id() -> str:
    return uuid.uuid4().hex[:6]


def create_namespace(kube: Kube, made: list[str], name: str,
                     labels: dict[str, str] | None = None) -> str:
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": name, "labels": labels or {}}}
    kube("create", "-f", "-", input=json.dumps(namespace))
    made.append(name)
    return name


def can_i_list(kube: Kube, subject: str, namespace: str) -> dict[str, set[str]]:
    """Resource (`resource[names]` when limited to names) -> verbs `subject` may use in
    `namespace`, cluster-wide grants included, without the defaults every authenticated user
    has."""
    out = kube("auth", "can-i", "--list", f"--as={subject}", "-n", namespace).stdout
    granted: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$", line)
        if not match or not match[1] or DEFAULTS.match(match[1]):
            continue  # a non-resource URL row, or a default grant
        resource, names, verbs = match[1], match[3], set(match[4].split())
        key = f"{resource}[{names}]" if names else resource
        granted.setdefault(key, set()).update(verbs)
    return granted


@pytest.fixture
def applied(kube: Kube) -> Iterator[list[dict[str, Any]]]:
    """Objects a test creates for real (append them); deleted afterwards."""
    objects: list[dict[str, Any]] = []
    try:
        yield objects
    finally:
        if objects:
            listing = {"apiVersion": "v1", "kind": "List", "items": objects}
            kube("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                 input=json.dumps(listing), check=False)


def apply_rbac(kube: Kube, rendered: Rendered, home: str,
               applied: list[dict[str, Any]]) -> None:
    """Create the chart's RBAC objects (not the helm test's) for real, the release's own in
    `home`."""
    objects = [doc for doc in rendered.docs
               if doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                  "RoleBinding")
               and "helm.sh/hook" not in (doc["metadata"].get("annotations") or {})]
    for doc in objects:
        if doc["kind"] == "ServiceAccount":
            doc["metadata"]["namespace"] = home
    applied.extend(objects)
    kube("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                               "items": objects}))


def wait_granted(kube: Kube, subject: str, namespace: str, resource: str) -> None:
    """RBAC objects are cached by the authorizer; wait until a grant shows."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if resource in can_i_list(kube, subject, namespace):
            return
        time.sleep(0.5)
    raise AssertionError(f"{subject} never got {resource} in {namespace}")


def test_cluster_scope_grants_what_the_operator_uses_in_every_namespace(
        helm: Helm, kube: Kube, scratch_namespaces: list[str],
        applied: list[dict[str, Any]]) -> None:
    release = f"kt{short_id()}"
    home = create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
    other = create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
    rendered = helm.template(URL, release=release, namespace=home)
    apply_rbac(kube, rendered, home, applied)
    subject = f"system:serviceaccount:{home}:{release}-kflow"
    wait_granted(kube, subject, home, "flows.kflow.dev")

    for namespace in (home, other):
        assert can_i_list(kube, subject, namespace) == SERVED | PEERINGS | CLUSTER_ONLY

    # Nothing else cluster-wide: no namespaces, nodes, or Secrets beyond a get by name.
    for verb, resource in (("list", "namespaces"), ("list", "secrets"), ("list", "nodes"),
                           ("create", "customresourcedefinitions")):
        answer = kube("auth", "can-i", verb, resource, f"--as={subject}", "-n", other,
                      check=False).stdout.strip()
        assert answer == "no", f"{verb} {resource}: {answer}"


def test_namespace_scope_grants_only_in_the_watched_namespaces(
        helm: Helm, kube: Kube, scratch_namespaces: list[str],
        applied: list[dict[str, Any]]) -> None:
    release = f"kt{short_id()}"
    home = create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
    watched = [create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
               for _ in range(2)]
    unwatched = create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
    rendered = helm.template(URL, f"watchNamespaces={{{','.join(watched)}}}",
                             "rbac.scope=namespace", release=release, namespace=home)
    # Nothing cluster-wide but the API server's binding to the built-in system:auth-delegator
    # (create TokenReviews and SubjectAccessReviews: it reads no namespace's objects).
    assert not rendered.kinds("ClusterRole")
    assert [(b["roleRef"]["name"], b["subjects"]) for b in rendered.kinds("ClusterRoleBinding")] \
        == [("system:auth-delegator", [{"kind": "ServiceAccount", "name": f"{release}-kflow-server",
                                         "namespace": home}])]
    apply_rbac(kube, rendered, home, applied)
    subject = f"system:serviceaccount:{home}:{release}-kflow"
    for namespace in watched:
        wait_granted(kube, subject, namespace, "flows.kflow.dev")

    for namespace in watched:
        assert can_i_list(kube, subject, namespace) == SERVED | PEERINGS
    # In its own namespace only Events on its own Deployment (pods get Secrets by reference;
    # peering lives in the served namespaces); in any other, nothing.
    assert can_i_list(kube, subject, home) == {
        f"deployments.apps[{release}-kflow]": {"get"}, "events": {"create", "patch"}}
    assert can_i_list(kube, subject, unwatched) == {}
    for resource in ("customresourcedefinitions", "namespaces", "clusterkopfpeerings.kopf.dev"):
        answer = kube("auth", "can-i", "list", resource, f"--as={subject}",
                      check=False).stdout.strip()
        assert answer == "no", f"list {resource}: {answer}"


def load_check_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """files/helm-test/check.py, as the helm test pod runs it (its settings from env)."""
    for name, value in (("KFLOW_TEST_NAMESPACE", "t"), ("KFLOW_TEST_NAME", "kflow-test"),
                        ("KFLOW_TEST_RUNNER_IMAGE", "localhost/kflow-runner:dev"),
                        ("KFLOW_TEST_HANDLERS_CONFIGMAP", "kflow-test")):
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(
        "kflow_chart_check", CHART / "files" / "helm-test" / "check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dry_run_pod(kube: Kube, namespace: str, name: str,
                spec: dict[str, Any]) -> tuple[int, str]:
    """`kubectl create --dry-run=server` of `spec` as a Pod: admission runs, nothing is made."""
    spec = {**spec, "serviceAccountName": "default"}  # the chart's own are not made here
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    result = kube("create", "--dry-run=server", "-n", namespace, "-f", "-",
                  input=json.dumps(pod), check=False)
    return result.returncode, result.stderr


def test_every_pod_passes_pod_security_restricted(
        helm: Helm, kube: Kube, scratch_namespaces: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = create_namespace(kube, scratch_namespaces, f"kflow-psa-{short_id()}", {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"})
    deadline = time.monotonic() + 60
    while kube("-n", namespace, "get", "serviceaccount", "default",
               check=False).returncode != 0:
        assert time.monotonic() < deadline, "the default ServiceAccount never appeared"
        time.sleep(0.5)
    rendered = helm.template("redis.deploy=true", "webhook.enabled=true", namespace=namespace)
    specs = {doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
             for doc in rendered.kinds("Deployment")}
    specs.update({doc["metadata"]["name"]: doc["spec"] for doc in rendered.kinds("Pod")})
    # The pods of the helm test's Queue, as its script writes their template.
    specs["kflow-test-node"] = load_check_script(monkeypatch).queue()["spec"]["template"]["spec"]
    assert set(specs) == {"kflow", "kflow-redis", "kflow-server", "kflow-test", "kflow-test-node"}

    for name, spec in specs.items():
        code, stderr = dry_run_pod(kube, namespace, name, spec)
        assert code == 0, f"{name} was refused: {stderr}"
        assert "PodSecurity" not in stderr, f"{name}: {stderr}"

    # The negative controls: the same namespace refuses a privileged container, and the
    # operator's pod once one of its settings is taken away.
    privileged = {"containers": [{"name": "c", "image": "localhost/kflow-runner:dev",
                                  "securityContext": {"privileged": True}}]}
    code, stderr = dry_run_pod(kube, namespace, "privileged", privileged)
    assert code != 0 and "violates PodSecurity" in stderr, stderr
    weakened = json.loads(json.dumps(specs["kflow"]))
    del weakened["containers"][0]["securityContext"]["capabilities"]
    code, stderr = dry_run_pod(kube, namespace, "weakened", weakened)
    assert code != 0 and "capabilities" in stderr, stderr


def test_the_api_server_takes_every_rendered_object(
        helm: Helm, kube: Kube, scratch_namespaces: list[str]) -> None:
    namespace = create_namespace(kube, scratch_namespaces, f"kflow-chart-{short_id()}")
    rendered = helm.template("redis.deploy=true", "redis.persistence.hostPath=/var/lib/x",
                             release=f"kt{short_id()}", namespace=namespace)
    served = kube("api-resources", "-o", "name").stdout.split()
    # kopf's peering kinds exist only once their CRDs are installed (helm does it from crds/).
    objects = [doc for doc in rendered.docs
               if "kopfpeering" not in doc["kind"].lower()
               or "kopfpeerings.kopf.dev" in served]
    # A Pod is admitted only once its ServiceAccount exists: those are made for real (they
    # go with the namespace).
    accounts = [doc for doc in objects if doc["kind"] == "ServiceAccount"]
    kube("apply", "-n", namespace, "-f", "-",
         input=json.dumps({"apiVersion": "v1", "kind": "List", "items": accounts}))
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}

    result = kube("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                  input=json.dumps(listing), check=False)

    assert result.returncode == 0, result.stderr
