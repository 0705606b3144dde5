"""Events and notifications on the local cluster: the same Event posted many times is one Event
object with its count, and a Flow's webhook (its URL in a Secret) gets exactly one CloudEvent
when the flow ends, also when the operator is killed before the receiver took it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import config as kube_config

from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import Kube, OperatorWorld, Scenario
from kflow.devkit.receiver import Receiver
from kflow.kube.events import EventPoster
from kflow.kube.k8s import KubeApi

pytestmark = [pytest.mark.cluster]


def events_of(kube: Kube, namespace: str, reason: str) -> list[dict[str, Any]]:
    items = kube.json("events", "-n", namespace).get("items") or []
    return [e for e in items if e.get("reason") == reason]


async def test_identical_events_are_one_object_with_their_count(kube: Kube,
                                                                kube_namespace: str) -> None:
    kube_config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    poster = EventPoster(KubeApi(), identity="test-operator", interval=0.2)
    involved = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow", "name": "orders",
                "namespace": kube_namespace, "uid": "2f0c9a44-aggregation"}

    for _ in range(50):
        poster.post_on(involved, reason="NodeFailed", message='node "a" failed: boom',
                       warning=True)
    await poster.drain()
    for _ in range(7):  # later: patches of the object already there
        poster.post_on(involved, reason="NodeFailed", message='node "a" failed: boom',
                       warning=True)
        await poster.drain()
    for other in ("b", "c"):
        poster.post_on(involved, reason="NodeFailed", message=f'node "{other}" failed: boom',
                       warning=True)
    await poster.drain()

    found = {e["message"]: e for e in events_of(kube, kube_namespace, "NodeFailed")}
    assert {m: e["count"] for m, e in found.items()} == {
        'node "a" failed: boom': 57, 'node "b" failed: boom': 1, 'node "c" failed: boom': 1}
    first = found['node "a" failed: boom']
    assert first["type"] == "Warning" and first["involvedObject"]["uid"] == involved["uid"]
    assert first["lastTimestamp"] >= first["firstTimestamp"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


def with_webhook(scenario: Scenario, receiver: Receiver) -> dict[str, Any]:
    scenario.kube("create", "secret", "generic", "hooks", "-n", scenario.namespace,
                  f"--from-literal=url={receiver.url('/hook?token=s3cret')}")
    return {"webhook": {"secretKeyRef": {"name": "hooks"}}}


def notification(scenario: Scenario, name: str) -> dict[str, Any]:
    return (scenario.get_flow(name).get("status") or {}).get("notification") or {}


def test_a_finished_flow_sends_one_cloudevent_of_its_ending(scenario: Scenario,
                                                            receiver: Receiver) -> None:
    receiver.start()
    notify = with_webhook(scenario, receiver)
    scenario.apply(queue("ok", "echo"), queue("fails", "fail"),
                   flow("good", [{"name": "a", "queue": "ok"}], notify=notify),
                   flow("bad", [{"name": "boom", "queue": "fails"}], notify=notify))

    for name in ("good", "bad"):
        scenario.wait_for(f"Flow {name}'s notification delivered",
                          lambda name=name: notification(scenario, name).get("state")  # type: ignore[misc]
                          == "Delivered", 180)

    by_name = {r.body["data"]["name"]: r for r in receiver.got}
    assert len(receiver.got) == 2 and set(by_name) == {"good", "bad"}
    good, bad = by_name["good"].body, by_name["bad"].body
    assert by_name["good"].content_type == "application/cloudevents+json"
    assert by_name["good"].query == "token=s3cret"
    assert good["type"] == "dev.kflow.flow.succeeded" and good["specversion"] == "1.0"
    assert good["source"] == f"/apis/kflow.dev/v1alpha1/namespaces/{scenario.namespace}/flows/good"
    assert good["subject"] == scenario.uid("good") and good["data"]["progress"] == "1/1"
    assert good["id"] == notification(scenario, "good")["id"]
    assert bad["type"] == "dev.kflow.flow.failed"
    assert [f["node"] for f in bad["data"]["firstFailures"]] == ["boom"]
    assert "fails on purpose" in bad["data"]["firstFailures"][0]["error"]
    sent = events_of(scenario.kube, scenario.namespace, "NotificationSent")
    assert len(sent) == 2 and all("s3cret" not in e["message"] for e in sent)


def test_a_notification_owed_when_the_operator_died_is_sent_once_after_restart(
        operator_world: OperatorWorld, receiver: Receiver) -> None:
    # The first try is refused (nobody listens yet) and the next waits 15-30 s: the operator
    # is killed in between, with the flow finished and nothing delivered.
    with operator_world.scenario(notify_backoff_base="30") as scenario:
        notify = with_webhook(scenario, receiver)
        scenario.apply(queue("ok", "echo"),
                       flow("first", [{"name": "a", "queue": "ok"}], notify=notify))
        scenario.wait_phase("first", ("Succeeded",))
        scenario.wait_for("a refused first try", lambda: "try 1 of 8 failed"
                          in scenario.operator.log_tail(200), 60)
        scenario.operator.kill9()
        assert notification(scenario, "first") == {}

        receiver.start()
        scenario.operator.start()
        scenario.wait_for("the owed notification delivered",
                          lambda: notification(scenario, "first").get("state") == "Delivered",
                          120)
        assert [r.body["data"]["name"] for r in receiver.got] == ["first"]

        # Delivered and recorded: another restart sends nothing again. A second flow's
        # notification shows the new operator has been through the Flows.
        scenario.operator.stop()
        scenario.operator.start()
        scenario.apply(flow("second", [{"name": "a", "queue": "ok"}], notify=notify))
        scenario.wait_for("the second flow's notification", lambda: len(receiver.got) >= 2, 180)
        assert sorted(r.body["data"]["name"] for r in receiver.got) == ["first", "second"]
        assert notification(scenario, "first")["attempts"] == 1
