"""The chart's kflow API: the server Deployment and Service, its least-privilege RBAC, the
service-proxy grant, and flows' rights aggregated into the built-in roles."""

from __future__ import annotations

from typing import Any

from kflow.settings import ServerSettings
from tests.chart.conftest import Helm
from tests.chart.test_chart_render import URL, env_of


def granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    return {(group, resource): set(rule["verbs"]) for rule in rules
            for group in rule["apiGroups"] for resource in rule["resources"]}


def test_the_server_runs_the_operator_image_with_the_operators_redis(helm: Helm) -> None:
    rendered = helm.template(URL, "server.port=8181")

    deployment = rendered.get("Deployment", "kflow-server")
    operator = rendered.get("Deployment", "kflow")["spec"]["template"]["spec"]["containers"][0]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == operator["image"]
    assert container["command"] == ["kflow", "server"]  # the image's entrypoint is the operator
    assert pod["serviceAccountName"] == "kflow-server"
    env = env_of(container)
    for name in ("KFLOW_REDIS_URL", "KFLOW_REDIS_PASSWORD", "KFLOW_REDIS_PREFIX"):
        assert env[name] == env_of(operator)[name], name
    # The variable the server's settings read (not a name typed twice).
    assert env[f"{ServerSettings.model_config['env_prefix']}PORT"] == "8181"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Its own pods: the operator's Service, PDB and selector never pick them up.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "server"
    service = rendered.get("Service", "kflow-api")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "http", "port": 8181, "targetPort": "http"}]


def test_the_servers_account_may_only_read_and_steer_flows_and_review(helm: Helm) -> None:
    rendered = helm.template(URL)

    assert granted(rendered.get("ClusterRole", "kflow-server-kflow-system")["rules"]) == {
        ("kflow.dev", "flows"): {"get", "list", "patch", "delete"}}
    bindings = {b["metadata"]["name"]: b for b in rendered.kinds("ClusterRoleBinding")}
    delegator = bindings["kflow-server-auth-delegator-kflow-system"]
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    assert delegator["subjects"] == [{"kind": "ServiceAccount", "name": "kflow-server",
                                      "namespace": "kflow-system"}]
    assert bindings["kflow-server-kflow-system"]["subjects"][0]["name"] == "kflow-server"


def test_namespace_scope_grants_the_server_a_role_per_watched_namespace(helm: Helm) -> None:
    rendered = helm.template(URL, "watchNamespaces={etl,ml}", "rbac.scope=namespace")

    roles = [r for r in rendered.kinds("Role") if r["metadata"]["name"] == "kflow-server"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["etl", "ml"]
    for role in roles:
        assert granted(role["rules"]) == {
            ("kflow.dev", "flows"): {"get", "list", "patch", "delete"}}


def test_every_authenticated_user_may_reach_only_the_api_through_the_proxy(helm: Helm) -> None:
    rendered = helm.template(URL)

    role = rendered.get("Role", "kflow-api-proxy")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["services/proxy"],
                              "resourceNames": ["kflow-api", "http:kflow-api:http"],
                              "verbs": ["get", "create", "delete"]}]
    binding = rendered.get("RoleBinding", "kflow-api-proxy")
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                    "name": "system:authenticated"}]

    closed = helm.template(URL, "server.proxyAccess=none")
    assert "Role/kflow-api-proxy" not in closed.names()
    assert "RoleBinding/kflow-api-proxy" not in closed.names()


def test_view_reads_flows_and_edit_and_admin_steer_them(helm: Helm) -> None:
    rendered = helm.template(URL)

    by_role = {}
    for role in rendered.kinds("ClusterRole"):
        labels = role["metadata"]["labels"]
        for built_in in ("view", "edit", "admin"):
            if labels.get(f"rbac.authorization.k8s.io/aggregate-to-{built_in}") == "true":
                by_role[built_in] = granted(role["rules"])
    read = {"get", "list", "watch"}
    write = read | {"create", "update", "patch", "delete"}
    assert by_role == {
        role: {("kflow.dev", kind): verbs
               for kind in ("flows", "queues", "cronflows", "flowtemplates")}
        for role, verbs in (("view", read), ("edit", write), ("admin", write))}

    assert not [r for r in helm.template(URL, "rbac.aggregateToDefaultRoles=false")
                .kinds("ClusterRole") if "aggregate" in r["metadata"]["name"]]


def test_server_disabled_leaves_no_server_object(helm: Helm) -> None:
    rendered = helm.template(URL, "server.enabled=false")

    assert not [n for n in rendered.names() if "kflow-server" in n or "kflow-api" in n]
