"""A Redis without persistence is reported as a Warning Event on the operator's own Deployment,
found by name or through the pod's owners, on the real API server (Deployments that never run:
their pods cannot be scheduled anywhere)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import config as kube_config

from kflow.devkit.operator import Kube, new_namespace
from kflow.devkit.redis import RedisServer
from kflow.engine import Engine
from kflow.kube.events import EventPoster
from kflow.kube.k8s import KubeApi
from kflow.kube.metrics import Metrics
from kflow.kube.redis_health import REASON_NO_PERSISTENCE, report_persistence
from kflow.kube.runtime import Runtime
from kflow.settings import OperatorPodSettings, Settings
from kflow.store.connect import connect
from kflow.store.durability import read_durability

pytestmark = pytest.mark.cluster


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                # Never scheduled, so never pulled: only the owner chain matters here.
                "nodeSelector": {"kflow.dev/test-nowhere": "true"},
                "containers": [{"name": "operator", "image": "kflow.invalid/operator:none"}],
            }},
        },
    }


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = new_namespace("kflow-redis")
    kube("create", "namespace", name)
    try:
        yield name
    finally:
        kube("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def api(kube: Kube) -> KubeApi:
    kube_config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    return KubeApi()


def warnings_on(kube: Kube, namespace: str, name: str, timeout: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in kube.json("events", "-n", namespace).get("items") or []
                 if e.get("reason") == REASON_NO_PERSISTENCE
                 and e["involvedObject"].get("kind") == "Deployment"
                 and e["involvedObject"].get("name") == name]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


async def test_the_warning_lands_on_the_deployment_named_in_the_settings(
        kube: Kube, namespace: str, api: KubeApi, redis_srv: RedisServer) -> None:
    kube.apply(deployment("kflow-named"), namespace)
    uid = kube.json("deployment", "kflow-named", "-n", namespace)["metadata"]["uid"]
    client = await connect(redis_srv.url)  # the kit's servers keep nothing
    try:
        readings = await read_durability(client)
    finally:
        await client.aclose()
    metrics = Metrics()

    text = await report_persistence(
        readings, metrics=metrics, events=EventPoster(api, identity="test-operator"), api=api,
        pod=OperatorPodSettings(pod_namespace=namespace, deployment="kflow-named"))

    [event] = warnings_on(kube, namespace, "kflow-named")
    assert event["type"] == "Warning" and event["involvedObject"]["uid"] == uid
    assert text is not None and "appendonly yes" in event["message"]
    assert metrics.value("kflow_redis_persistence_enabled") == 0


async def test_the_operator_finds_its_deployment_through_its_pod_owners(
        kube: Kube, namespace: str, api: KubeApi, redis_srv: RedisServer) -> None:
    kube.apply(deployment("kflow-owned"), namespace)
    deadline = time.monotonic() + 60
    pods: list[Any] = []
    while not pods and time.monotonic() < deadline:
        pods = kube.json("pods", "-n", namespace, "-l", "app=kflow-owned").get("items") or []
        time.sleep(0.5)
    assert pods, "the Deployment's ReplicaSet made no pod"
    client = await connect(redis_srv.url)
    settings = Settings(operator_pod=OperatorPodSettings(
        pod_name=pods[0]["metadata"]["name"], pod_namespace=namespace))
    runtime = Runtime(settings, Engine(client), api, client)
    try:
        # What the operator runs once started (Runtime.start schedules it).
        text = await runtime.report_redis_persistence()
    finally:
        await client.aclose()

    [event] = warnings_on(kube, namespace, "kflow-owned")
    assert text is not None and event["message"].startswith(text[:200])
    assert event["source"]["component"] == "kflow-operator"
    assert runtime.metrics.value("kflow_redis_persistence_enabled") == 0
