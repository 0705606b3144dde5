"""kube/tenants.py against a real Redis and the local cluster's Secrets: the namespace's Secret
made with its own Redis user, a Secret kflow did not make left alone, rotation on request,
users set again after Redis forgot them."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from redis.exceptions import AuthenticationError, ResponseError

from kflow.devkit.operator import Kube
from kflow.devkit.redis import RedisServer
from kflow.kube.k8s import KubeApi
from kflow.kube.tenants import (
    ANNOTATION_ROTATE,
    LABEL_MANAGED_BY,
    AclAdminMissing,
    SecretLayout,
    Tenants,
)
from kflow.store.acl import apply_tenant_user
from kflow.store.connect import connect

pytestmark = [pytest.mark.cluster]

LAYOUT = SecretLayout("kflow-redis", "url", "username", "password", None)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"kflow-tenant-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", name)
    try:
        yield name
    finally:
        kube("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def admin(redis_srv: RedisServer) -> AsyncIterator[Any]:
    redis = await connect(redis_srv.url)
    try:
        yield redis
    finally:
        await redis.aclose()


def kube_api(kube: Kube) -> KubeApi:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kube.kubeconfig),  # type: ignore[no-untyped-call]
                                client_configuration=configuration)
    return KubeApi(configuration=configuration)


def tenants(kube: Kube, redis: Any, url: str, warnings: list[tuple[str, str]]) -> Tenants:
    return Tenants(redis, kube_api(kube), prefix="kflow", url=url, layout=LAYOUT,
                   warn=lambda involved, reason, message: warnings.append((reason, message)))


def secret_data(kube: Kube, namespace: str) -> dict[str, str]:
    secret = kube.json("secret", LAYOUT.name, "-n", namespace)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


async def can_connect(url: str, data: dict[str, str], password: str | None = None) -> bool:
    try:
        client = await connect(url, username=data["username"],
                               password=password or data["password"])
    except (AuthenticationError, ResponseError):
        return False
    await client.aclose()
    return True


FLOW = {"kind": "Flow", "name": "f", "apiVersion": "kflow.dev/v1alpha1"}


async def test_the_namespace_gets_its_own_user_and_rotates_on_request(
        kube: Kube, namespace: str, admin: Any, redis_srv: RedisServer) -> None:
    warnings: list[tuple[str, str]] = []
    keeper = tenants(kube, admin, redis_srv.url, warnings)
    await keeper.ensure(namespace, {**FLOW, "namespace": namespace})
    first = secret_data(kube, namespace)
    assert first["url"] == redis_srv.url and first["username"] == f"kflow-ns-{namespace}"
    secret = kube.json("secret", LAYOUT.name, "-n", namespace)
    assert secret["metadata"]["labels"][LABEL_MANAGED_BY] == "kflow"
    assert await can_connect(redis_srv.url, first)

    for turn in ("1", "2"):
        kube("-n", namespace, "annotate", "secret", LAYOUT.name, "--overwrite",
             f"{ANNOTATION_ROTATE}={turn}")
        await keeper.secret_changed(namespace, kube.json("secret", LAYOUT.name, "-n", namespace))
        if turn == "1":
            second = secret_data(kube, namespace)
            assert second["password"] != first["password"]
            assert await can_connect(redis_srv.url, second)
            assert await can_connect(redis_srv.url, second, first["password"])  # still valid
    third = secret_data(kube, namespace)
    assert await can_connect(redis_srv.url, third)
    assert await can_connect(redis_srv.url, third, second["password"])
    assert not await can_connect(redis_srv.url, third, first["password"])  # two rotations ago
    # The annotation is acted on once: the same value again changes nothing.
    await keeper.secret_changed(namespace, kube.json("secret", LAYOUT.name, "-n", namespace))
    assert secret_data(kube, namespace)["password"] == third["password"]

    # Redis forgets its users (a restart without an ACL file); a new operator process sets
    # them again from the Secret, both passwords.
    await admin.execute_command("ACL", "DELUSER", third["username"])
    assert not await can_connect(redis_srv.url, third)
    await tenants(kube, admin, redis_srv.url, warnings).ensure(namespace, FLOW)
    assert await can_connect(redis_srv.url, third)
    assert await can_connect(redis_srv.url, third, second["password"])
    assert warnings == []


async def test_a_secret_kflow_did_not_make_is_reported_and_left_alone(
        kube: Kube, namespace: str, admin: Any, redis_srv: RedisServer) -> None:
    kube("-n", namespace, "create", "secret", "generic", LAYOUT.name,
         "--from-literal=url=redis://theirs:6379/0")
    warnings: list[tuple[str, str]] = []
    keeper = tenants(kube, admin, redis_srv.url, warnings)
    for _ in range(2):  # reported once
        await keeper.ensure(namespace, {**FLOW, "namespace": namespace})
    assert secret_data(kube, namespace) == {"url": "redis://theirs:6379/0"}
    [(reason, message)] = warnings
    assert reason == "ForeignRedisSecret"
    assert f"Secret {namespace}/{LAYOUT.name}" in message and "delete the Secret" in message

    # Following the advice: once it is deleted, the next round makes kflow's own.
    kube("-n", namespace, "delete", "secret", LAYOUT.name)
    await keeper.reapply()
    made = secret_data(kube, namespace)
    assert made["username"] == f"kflow-ns-{namespace}" and await can_connect(redis_srv.url, made)


async def test_an_operator_user_without_acl_rights_cannot_turn_tenants_on(
        kube: Kube, admin: Any, redis_srv: RedisServer) -> None:
    await apply_tenant_user(admin, "kflow", "someone", ["pw"])
    weak = await connect(redis_srv.url, username="kflow-ns-someone", password="pw")
    try:
        with pytest.raises(AclAdminMissing, match="may not manage ACL users"):
            await tenants(kube, weak, redis_srv.url, []).check_admin()
    finally:
        await weak.aclose()
