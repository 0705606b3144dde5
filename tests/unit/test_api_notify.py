"""spec.notify: the webhook's Secret reference is checked like every field (object, field, fix),
and the status record of a notification reads back; the envelope's id and host helpers."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.api import FlowStatus, SpecError, parse_manifest
from kflow.kube.notify import cloud_event, event_id, webhook_host


def flow_doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"name": "orders-7", "namespace": "etl"},
            "spec": {"nodes": [{"name": "a", "queue": "q"}], **spec}}


def test_a_webhook_secret_reference_parses_with_url_as_the_default_key() -> None:
    flow = parse_manifest(flow_doc(notify={"webhook": {"secretKeyRef": {"name": "hooks"}}}))
    assert flow.spec.notify is not None
    ref = flow.spec.notify.webhook.secret_key_ref
    assert (ref.name, ref.key) == ("hooks", "url")


@pytest.mark.parametrize(
    ("notify", "field", "fragment"),
    [
        ({}, "spec.notify.webhook", "required"),
        ({"webhook": {"url": "https://x"}}, "spec.notify.webhook.url", "not a field kflow knows"),
        ({"webhook": {"secretKeyRef": {"name": "Hooks"}}},
         "spec.notify.webhook.secretKeyRef.name", "Kubernetes object name"),
        ({"webhook": {"secretKeyRef": {"name": "hooks", "key": "a/b"}}},
         "spec.notify.webhook.secretKeyRef.key", "be a Secret key"),
    ],
)
def test_a_bad_notify_names_the_flow_and_the_field(notify: dict[str, Any], field: str,
                                                   fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_manifest(flow_doc(notify=notify))
    text = str(caught.value)
    assert text.startswith("Flow etl/orders-7: ") and f"{field} " in text, text
    assert fragment in text


def test_the_status_record_reads_back() -> None:
    status = FlowStatus.model_validate({"phase": "Succeeded", "notification": {
        "id": "u/Succeeded/t", "state": "Delivered", "attempts": 2,
        "time": "2026-11-30T07:00:00Z"}})
    assert status.notification is not None and status.notification.state == "Delivered"


def test_the_id_is_one_per_ending_of_one_flow() -> None:
    first = {"phase": "Failed", "finishedAt": "2026-11-30T07:00:00Z"}
    again = {"phase": "Succeeded", "finishedAt": "2026-11-30T07:05:00Z"}
    assert event_id("u-1", first) == event_id("u-1", dict(first))
    assert len({event_id("u-1", first), event_id("u-1", again), event_id("u-2", first)}) == 3
    event = cloud_event(namespace="etl", name="orders", uid="u-1", status=first)
    assert event["time"] == first["finishedAt"] and event["type"] == "dev.kflow.flow.failed"
    assert event["datacontenttype"] == "application/json"


@pytest.mark.parametrize(("url", "host"), [
    ("https://hooks.example.com/T0KEN?sig=1", "hooks.example.com"),
    ("http://user:pw@10.0.0.5:8080/x", "10.0.0.5:8080"),
    ("not a url", "?"),
])
def test_messages_name_only_the_host(url: str, host: str) -> None:
    assert webhook_host(url) == host
