"""What `helm template` makes of charts/kflow: the objects a user gets, their names, the settings
the operator reads, the bundled Redis, and the values it refuses. No cluster needed."""

from __future__ import annotations

import asyncio
import base64
import os
import py_compile
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kflow.devkit.checkout import REPO
from kflow.settings import MetricsSettings, PodRedisSettings
from tests.chart.conftest import CHART, Helm

URL = "redis.url=redis://redis.example:6379/0"


def pod_specs(rendered: Any) -> dict[str, dict[str, Any]]:
    """Every pod spec the chart makes: Deployment templates and (test) Pods, by object name."""
    specs = {doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
             for doc in rendered.kinds("Deployment")}
    specs.update({doc["metadata"]["name"]: doc["spec"] for doc in rendered.kinds("Pod")})
    return specs


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def secret_text(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def test_the_chart_lints_strictly_with_each_redis_mode(helm: Helm) -> None:
    for values in ([URL], ["redis.deploy=true"],
                   ["redis.deploy=true", "redis.persistence.hostPath=/var/lib/kflow-redis",
                    "watchNamespaces={etl,ml}", "rbac.scope=namespace"]):
        sets = [arg for value in values for arg in ("--set", value)]
        result = helm.run("lint", "--strict", str(CHART), *sets, check=False)
        assert result.returncode == 0, f"{values}: {result.stdout}{result.stderr}"


def test_a_default_install_has_everything_the_operator_needs(helm: Helm) -> None:
    rendered = helm.template(URL, extra=("--include-crds",))

    crds = {doc["metadata"]["name"] for doc in rendered.kinds("CustomResourceDefinition")}
    assert crds == {"flows.kflow.dev", "queues.kflow.dev", "flowtemplates.kflow.dev",
                    "cronflows.kflow.dev", "clusterkopfpeerings.kopf.dev",
                    "kopfpeerings.kopf.dev"}
    # Named after the release, once: no kflow-kflow.
    assert not [name for name in rendered.names() if "kflow-kflow" in name]
    deployment = rendered.get("Deployment", "kflow")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == rendered.get("ServiceAccount", "kflow")["metadata"]["name"]
    binding = rendered.get("ClusterRoleBinding", "kflow")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kflow",
                                    "namespace": "kflow-system"}]
    assert rendered.get("ClusterKopfPeering", "kflow")
    assert rendered.get("PodDisruptionBudget", "kflow")["spec"]["minAvailable"] == 1
    # The settings the operator reads, and probes on what it serves.
    container = pod["containers"][0]
    env = env_of(container)
    assert env["KFLOW_PEERING_NAME"] == "kflow"
    assert env["KFLOW_OPERATOR_DEPLOYMENT"] == "kflow"  # Events about the operator itself
    assert env["KFLOW_POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["KFLOW_REDIS_URL"] == {"secretKeyRef": {"name": "kflow-redis", "key": "url"}}
    assert env["KFLOW_REDIS_SECRET_NAME"] == PodRedisSettings().name
    liveness = MetricsSettings(KFLOW_LIVENESS_ENDPOINT=env["KFLOW_LIVENESS_ENDPOINT"])
    assert liveness.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["health"] == 8080 and ports["metrics"] == int(env["KFLOW_METRICS_PORT"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    metrics = rendered.get("Service", "kflow-metrics")
    assert metrics["spec"]["ports"][0]["targetPort"] == "metrics"
    assert metrics["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # redis.url goes into the operator's Secret and the pods' Secret of the release namespace
    # (same name for a release called kflow: one Secret).
    secret = rendered.get("Secret", "kflow-redis")
    assert secret_text(secret, "url") == "redis://redis.example:6379/0"
    assert "password" not in secret["data"]
    assert not rendered.kinds("PersistentVolumeClaim")


@pytest.mark.parametrize(("release", "override", "expected"), [
    ("kflow", "", "kflow"),
    ("prod-kflow", "", "prod-kflow"),
    ("t", "", "t-kflow"),
    ("t", "flows", "flows"),
])
def test_names_say_kflow_once(helm: Helm, release: str, override: str, expected: str) -> None:
    values = [URL] + ([f"fullnameOverride={override}"] if override else [])

    rendered = helm.template(*values, release=release)

    assert rendered.get("Deployment", expected)
    assert rendered.get("ValidatingWebhookConfiguration", f"{expected}.kflow.dev")
    # The pods' Secret keeps its own name whatever the release is called.
    pods_secret = rendered.get("Secret", "kflow-redis")
    if expected != "kflow":
        assert rendered.get("Secret", f"{expected}-redis")["data"] == pods_secret["data"]


def test_one_replica_has_no_disruption_budget(helm: Helm) -> None:
    rendered = helm.template(URL, "replicas=1")

    assert not rendered.kinds("PodDisruptionBudget")
    assert rendered.get("Deployment", "kflow")["spec"]["replicas"] == 1


def test_the_bundled_redis_keeps_its_data_behind_a_generated_password(helm: Helm) -> None:
    rendered = helm.template("redis.deploy=true", release="t", namespace="ops")

    secret = rendered.get("Secret", "t-kflow-redis")
    password = secret_text(secret, "password")
    assert len(password) == 32 and password.isalnum()
    assert secret_text(secret, "url") == "redis://t-kflow-redis.ops.svc:6379/0"
    conf = dict(line.split(" ", 1) for line in secret_text(secret, "redis.conf").splitlines())
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction" and conf["requirepass"] == password
    assert conf["dir"] == "/data"
    # The pods' Secret in the release namespace (tenants off): same URL and password. With
    # tenants on (the default with the bundled Redis) the operator makes it instead.
    assert "Secret/kflow-redis" not in rendered.names()
    shared = helm.template("redis.deploy=true", "redis.tenants=off", release="t", namespace="ops")
    assert shared.get("Secret", "kflow-redis")["data"] == {
        key: shared.get("Secret", "t-kflow-redis")["data"][key] for key in ("url", "password")}
    # The operator reads both from the Secret.
    operator = rendered.get("Deployment", "t-kflow")["spec"]["template"]["spec"]
    env = env_of(operator["containers"][0])
    assert env["KFLOW_REDIS_URL"]["secretKeyRef"] == {"name": "t-kflow-redis", "key": "url"}
    assert env["KFLOW_REDIS_PASSWORD"]["secretKeyRef"]["name"] == "t-kflow-redis"
    assert env["KFLOW_REDIS_TLS"] == "false"
    redis = rendered.get("Deployment", "t-kflow-redis")
    assert redis["spec"]["strategy"] == {"type": "Recreate"}
    pod = redis["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["redis-server", "/etc/redis/redis.conf"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    # The password reaches the probes' redis-cli through the environment, never argv.
    assert env_of(container)["REDISCLI_AUTH"]["secretKeyRef"]["name"] == "t-kflow-redis"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "t-kflow-redis"
    claim = rendered.get("PersistentVolumeClaim", "t-kflow-redis")
    # By default an uninstall takes the claim too; keepOnUninstall leaves it (and its data).
    assert "helm.sh/resource-policy" not in (claim["metadata"].get("annotations") or {})
    kept = helm.template("redis.deploy=true", "redis.persistence.keepOnUninstall=true",
                         release="t")
    assert kept.get("PersistentVolumeClaim", "t-kflow-redis")["metadata"]["annotations"][
        "helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    service = rendered.get("Service", "t-kflow-redis")
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]


def test_redis_storage_options(helm: Helm) -> None:
    local = helm.template("redis.deploy=true", "redis.persistence.hostPath=/var/lib/kflow-redis",
                          "redis.persistence.size=2Gi", namespace="ops")
    volume = local.get("PersistentVolume", "kflow-redis-ops")
    claim = local.get("PersistentVolumeClaim", "kflow-redis")
    assert volume["spec"]["hostPath"]["path"] == "/var/lib/kflow-redis"
    assert volume["spec"]["claimRef"] == {"namespace": "ops", "name": "kflow-redis"}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert claim["spec"]["volumeName"] == "kflow-redis-ops"
    assert claim["spec"]["storageClassName"] == volume["spec"]["storageClassName"] == ""
    assert volume["spec"]["capacity"]["storage"] == "2Gi"

    classed = helm.template("redis.deploy=true", "redis.persistence.storageClass=fast")
    assert classed.get("PersistentVolumeClaim", "kflow-redis")["spec"]["storageClassName"] == \
        "fast"
    no_class = helm.template("redis.deploy=true", "redis.persistence.storageClass=-")
    assert no_class.get("PersistentVolumeClaim", "kflow-redis")["spec"]["storageClassName"] == ""

    mine = helm.template("redis.deploy=true", "redis.persistence.existingClaim=mine")
    assert not mine.kinds("PersistentVolumeClaim")
    pod = mine.get("Deployment", "kflow-redis")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "mine"

    ephemeral = helm.template("redis.deploy=true", "redis.persistence.enabled=false")
    assert not ephemeral.kinds("PersistentVolumeClaim")
    pod = ephemeral.get("Deployment", "kflow-redis")["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {"name": "data", "emptyDir": {}}


def test_an_existing_secret_is_used_as_is(helm: Helm) -> None:
    rendered = helm.template("redis.existingSecret=my-redis")

    assert not rendered.kinds("Secret")[1:]  # only the webhook's certificate
    assert rendered.kinds("Secret")[0]["metadata"]["name"] == "kflow-webhook-tls"
    env = env_of(rendered.get("Deployment", "kflow")["spec"]["template"]["spec"]["containers"][0])
    assert env["KFLOW_REDIS_URL"]["secretKeyRef"]["name"] == "my-redis"


def test_every_pod_runs_restricted(helm: Helm) -> None:
    rendered = helm.template("redis.deploy=true")
    specs = pod_specs(rendered)

    assert set(specs) == {"kflow", "kflow-redis", "kflow-server", "kflow-test"}
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsUser"] == 65532, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name


def test_cluster_rbac_is_what_the_operator_calls(helm: Helm) -> None:
    rules = helm.template(URL).get("ClusterRole", "kflow")["rules"]

    granted = {(group, resource): set(rule["verbs"]) for rule in rules
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted == EXPECTED_RULES | {
        ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"},
        ("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    }


def test_namespace_rbac_is_a_role_per_watched_namespace(helm: Helm) -> None:
    rendered = helm.template(URL, "watchNamespaces={etl,ml}", "rbac.scope=namespace")

    # Nothing cluster-wide but what the API server's TokenReview and SubjectAccessReview need.
    assert not rendered.kinds("ClusterRole")
    assert [b["roleRef"]["name"] for b in rendered.kinds("ClusterRoleBinding")] == [
        "system:auth-delegator"]
    roles = rendered.kinds("Role")
    operator_roles = [role for role in roles if role["metadata"]["name"] == "kflow"]
    assert sorted(role["metadata"]["namespace"] for role in operator_roles) == ["etl", "ml"]
    for role in operator_roles:
        granted = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
                   for group in rule["apiGroups"] for resource in rule["resources"]}
        assert granted == EXPECTED_RULES | {
            ("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"}}
    bindings = [b for b in rendered.kinds("RoleBinding") if b["metadata"]["name"] == "kflow"]
    assert {(b["metadata"]["namespace"], b["subjects"][0]["namespace"]) for b in bindings} == {
        ("etl", "kflow-system"), ("ml", "kflow-system")}
    assert [peering["metadata"]["namespace"] for peering in rendered.kinds("KopfPeering")] == [
        "etl", "ml"]
    # In its own namespace: Events on its own Deployment, which it reads for the uid.
    own = rendered.get("Role", "kflow-self")
    assert own["metadata"]["namespace"] == "kflow-system"
    assert own["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["kflow"],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}]
    assert rendered.get("RoleBinding", "kflow-self")["subjects"][0]["name"] == "kflow"


# The namespaced rules of both scopes: operator/kflow/kube/k8s.py's calls and kopf's watches.
EXPECTED_RULES = {
    ("kflow.dev", "flows"): {"list", "watch", "create", "patch", "delete"},  # create: CronFlows
    ("kflow.dev", "queues"): {"list", "watch", "patch"},
    ("kflow.dev", "cronflows"): {"list", "watch", "patch"},
    ("kflow.dev", "flowtemplates"): {"get", "list", "watch"},  # get: a Flow's templateRef
    ("kflow.dev", "flows/status"): {"patch"},
    ("kflow.dev", "flowtemplates/status"): {"patch"},
    ("kflow.dev", "queues/status"): {"patch"},
    ("kflow.dev", "cronflows/status"): {"patch"},
    ("kflow.dev", "flows/finalizers"): {"update"},
    ("batch", "jobs"): {"list", "watch", "create", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "pods/log"): {"get"},  # the tail of each attempt's log, kept before its Job goes
    ("apps", "deployments"): {"get", "create", "update", "delete"},
    ("apps", "deployments/scale"): {"patch"},
    ("", "events"): {"create", "patch"},
    ("", "secrets"): {"get"},  # rbac.readSecrets: the webhook URL of spec.notify
}


def test_reading_secrets_for_notifications_can_be_turned_off(helm: Helm) -> None:
    rules = helm.template(URL, "rbac.readSecrets=false").get("ClusterRole", "kflow")["rules"]
    assert not [rule for rule in rules if "secrets" in rule["resources"]]


def test_the_helm_test_hook(helm: Helm, tmp_path: Path) -> None:
    rendered = helm.template(URL, "tests.runnerImage.repository=localhost/kflow-runner",
                             "tests.runnerImage.tag=dev")

    pod = rendered.get("Pod", "kflow-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["namespace"] == "kflow-system"
    env = env_of(pod["spec"]["containers"][0])
    assert env["KFLOW_TEST_RUNNER_IMAGE"] == "localhost/kflow-runner:dev"
    assert pod["spec"]["serviceAccountName"] == "kflow-test"
    role = rendered.get("Role", "kflow-test")
    assert role["rules"] == [
        {"apiGroups": ["kflow.dev"], "resources": ["flows", "queues"],
         "verbs": ["get", "create", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    for kind in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap"):
        annotations = rendered.get(kind, "kflow-test")["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "test"
        assert int(annotations["helm.sh/hook-weight"]) < 0  # before the Pod
    # The scripts are the chart's files, and they compile.
    scripts = rendered.get("ConfigMap", "kflow-test")["data"]
    for name in ("check.py", "handler.py"):
        assert scripts[name] == (CHART / "files" / "helm-test" / name).read_text()
        (tmp_path / name).write_text(scripts[name])
        py_compile.compile(str(tmp_path / name), doraise=True)
    # Under namespace RBAC the test runs in a namespace the operator serves.
    scoped = helm.template(URL, "watchNamespaces={etl}", "rbac.scope=namespace")
    assert scoped.get("Pod", "kflow-test")["metadata"]["namespace"] == "etl"


@pytest.mark.parametrize(("values", "named"), [
    (["replicas=-1"], ["/replicas", "-1"]),
    (["replicas=two"], ["/replicas"]),
    (["replicaz=2"], ["replicaz"]),
    (["redis.deploi=true"], ["/redis", "deploi"]),
    (["redis.persistence.sise=1Gi"], ["/redis/persistence", "sise"]),
    (["rbac.scope=tenant"], ["/rbac/scope", "'cluster', 'namespace'"]),
    (["webhook.failurePolicy=Never"], ["/webhook/failurePolicy"]),
    (["redis.deploy=true", "redis.tls=true"], ["redis.deploy=true", "redis.tls=true"]),
    (["redis.deploy=true", "redis.existingSecret=mine"],
     ["redis.deploy=true", "redis.existingSecret=mine"]),
    ([URL, "rbac.scope=namespace"], ["rbac.scope=namespace", "watchNamespaces"]),
    ([], ["redis.url"]),
])
def test_bad_values_fail_naming_the_value(helm: Helm, values: list[str],
                                          named: list[str]) -> None:
    error = helm.template_fails(*values)

    for text in named:
        assert text in error, error



@pytest.mark.redis
def test_the_helm_test_flow_succeeds_with_its_handler_and_fails_on_a_wrong_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Queue and Flow files/helm-test/check.py creates, run by `kflow run --local` with
    files/helm-test/handler.py (a private redis-server): the word travels from echo to check;
    a check that is handed another word fails the Flow."""
    for name, value in (("KFLOW_TEST_NAMESPACE", "t"), ("KFLOW_TEST_NAME", "kflow-test"),
                        ("KFLOW_TEST_RUNNER_IMAGE", "localhost/kflow-runner:dev"),
                        ("KFLOW_TEST_HANDLERS_CONFIGMAP", "kflow-test")):
        monkeypatch.setenv(name, value)
    check = runpy.run_path(str(CHART / "files" / "helm-test" / "check.py"))
    handler = CHART / "files" / "helm-test" / "handler.py"
    (tmp_path / "handlers.py").write_text(
        "import runpy\n"
        f"HANDLERS = {{'kflow-test': runpy.run_path({str(handler)!r})['run']}}\n")

    def run(flow: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "flow.yaml"
        path.write_text(yaml.safe_dump_all([check["queue"](), flow]))
        return subprocess.run([sys.executable, "-m", "kflow.cli.main", "run", "--local",
                               str(path), "--handlers", str(tmp_path / "handlers.py")],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(REPO / "operator")})

    good = run(check["flow"]("w0rd"))
    assert good.returncode == 0, good.stdout + good.stderr

    bad = check["flow"]("w0rd")
    bad["spec"]["nodes"][0]["data"]["word"] = "other"
    failed = run(bad)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "child echo returned {'echo': 'w0rd'}" in failed.stdout + failed.stderr


@pytest.mark.redis
async def test_the_bundled_redis_config_is_one_the_operator_accepts(helm: Helm,
                                                                    tmp_path: Path) -> None:
    """The redis.conf the chart writes, run by a real redis-server (this machine's, on a free
    port and a scratch dir instead of /data): kflow's own checks find noeviction and an
    append-only file, and a write lands in it."""
    from kflow.cli.redis_server import free_port
    from kflow.store.connect import connect
    from kflow.store.durability import (
        Persistence,
        eviction_refusal,
        persistence_of,
        read_durability,
    )

    secret = helm.template("redis.deploy=true").get("Secret", "kflow-redis")
    password = secret_text(secret, "password")
    port = free_port()
    conf = secret_text(secret, "redis.conf").replace("port 6379", f"port {port}") \
        .replace("bind * -::*", "bind 127.0.0.1").replace("dir /data", f"dir {tmp_path}")
    (tmp_path / "redis.conf").write_text(conf)
    server = subprocess.Popen(["redis-server", str(tmp_path / "redis.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        for _ in range(100):
            try:
                client = await connect(f"redis://127.0.0.1:{port}/0", password=password)
                await client.ping()
                break
            except Exception:
                client = None
                await asyncio.sleep(0.05)
        assert client is not None, "the bundled Redis's config did not start a server"
        [reading] = await read_durability(client)
        assert eviction_refusal(reading) is None
        assert persistence_of(reading) == Persistence.AOF
        assert await client.config_get("appendfsync") == {"appendfsync": "everysec"}
        await client.set("kflow:chart-test", "kept")
        await client.aclose()
        # Without the password the server answers nothing.
        with pytest.raises(Exception, match=r"(?i)auth"):
            anonymous = await connect(f"redis://127.0.0.1:{port}/0")
            await anonymous.get("kflow:chart-test")
    finally:
        server.terminate()
        server.wait(timeout=10)
    aof = b"".join(path.read_bytes() for path in (tmp_path / "appendonlydir").iterdir())
    assert b"kflow:chart-test" in aof
