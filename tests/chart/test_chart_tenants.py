"""The chart with tenants on (redis.tenants): the operator's switch, and Secrets access in the
served namespaces only then, in both rbac.scope modes."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.devkit.operator import Kube
from tests.chart.conftest import Helm, Rendered
from tests.chart.test_chart_cluster import (
    CLUSTER_ONLY,
    PEERINGS,
    SERVED,
    URL,
    applied,  # noqa: F401 - the fixture
    apply_rbac,
    can_i_list,
    create_namespace,
    short_id,
    wait_granted,
)

pytestmark = [pytest.mark.cluster]

SECRETS = {"secrets": {"get", "list", "watch", "create", "update", "patch"}}


def operator_env(rendered: Rendered) -> dict[str, Any]:
    deployment = rendered.get("Deployment", "rel-kflow")
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "operator"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_tenants_follow_the_bundled_redis_unless_chosen(helm: Helm) -> None:
    bundled = helm.template("redis.deploy=true", release="rel")
    assert operator_env(bundled)["KFLOW_TENANTS_ENABLED"] == "true"
    # The operator makes each namespace's pods Secret; the chart writes only its own.
    assert [s["metadata"]["name"] for s in bundled.kinds("Secret")
            if s["metadata"]["name"].endswith("redis")] == ["rel-kflow-redis"]
    assert "KFLOW_TENANTS_ENABLED" not in operator_env(helm.template(URL, release="rel"))
    chosen = operator_env(helm.template(URL, "redis.tenants=on",
                                        "redis.tenantsPodUrl=redis://pods.example:6379/0",
                                        release="rel"))
    assert chosen["KFLOW_TENANTS_POD_URL"] == "redis://pods.example:6379/0"
    assert "KFLOW_TENANTS_ENABLED" not in operator_env(
        helm.template("redis.deploy=true", "redis.tenants=off", release="rel"))
    assert "redis.tenants" in helm.template_fails(URL, "redis.tenants=yes").replace("/", ".")


def test_tenants_grant_secrets_in_every_namespace_under_cluster_scope(
        helm: Helm, kube: Kube, scratch_namespaces: list[str],
        applied: list[dict[str, Any]]) -> None:  # noqa: F811 - the fixture
    release = f"kt{short_id()}"
    home = create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
    other = create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
    subject = f"system:serviceaccount:{home}:{release}-kflow"
    rendered = helm.template(URL, "redis.tenants=on", release=release, namespace=home)
    apply_rbac(kube, rendered, home, applied)
    wait_granted(kube, subject, other, "secrets")
    assert can_i_list(kube, subject, other) == SERVED | PEERINGS | CLUSTER_ONLY | SECRETS


def test_tenants_grant_secrets_in_the_watched_namespaces_only_under_namespace_scope(
        helm: Helm, kube: Kube, scratch_namespaces: list[str],
        applied: list[dict[str, Any]]) -> None:  # noqa: F811 - the fixture
    release = f"kt{short_id()}"
    home = create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
    watched = create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
    unwatched = create_namespace(kube, scratch_namespaces, f"kflow-rbac-{short_id()}")
    subject = f"system:serviceaccount:{home}:{release}-kflow"
    rendered = helm.template(URL, "redis.tenants=on", "rbac.scope=namespace",
                             f"watchNamespaces={{{watched}}}", release=release, namespace=home)
    apply_rbac(kube, rendered, home, applied)
    wait_granted(kube, subject, watched, "secrets")
    assert can_i_list(kube, subject, watched) == SERVED | PEERINGS | SECRETS
    assert "secrets" not in can_i_list(kube, subject, unwatched)
    assert "secrets" not in can_i_list(kube, subject, home)
