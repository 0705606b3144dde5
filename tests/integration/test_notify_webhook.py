"""A finished flow's CloudEvent reaches a real HTTP receiver on the loopback: once, with retries
through errors and a receiver that is down, recorded in the Flow's status, resent by a new
operator only when no record says it was sent. The Kubernetes API is a double here (the
cluster e2e test, tests/e2e/test_operator_notify.py, runs the whole operator)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from kflow.devkit.receiver import Receiver
from kflow.kube.events import EventPoster
from kflow.kube.notify import CONTENT_TYPE, Notifier, event_id
from kflow.settings import NotifySettings

UID = "8d1c-uid"
NOTIFY = {"webhook": {"secretKeyRef": {"name": "hooks", "key": "url"}}}
FAST = NotifySettings(timeout_seconds=5, attempts=4, backoff_base=0.05, backoff_cap=0.2)


def finished(phase: str = "Succeeded", **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "progress": "3/3", "total": 3,
            "counts": {"completed": 3 if phase == "Succeeded" else 2,
                       "failed": 0 if phase == "Succeeded" else 1},
            "startedAt": "2026-11-30T07:00:00Z", "finishedAt": "2026-11-30T07:01:30Z",
            "duration": "1m30s", "firstFailures": [], **extra}


@dataclass
class Cluster:
    """The Secrets of the namespace, the Flow's status patches and the Events posted."""

    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def set_url(self, url: str, name: str = "hooks", key: str = "url") -> None:
        self.secrets[name] = {key: base64.b64encode(url.encode()).decode()}

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        data = self.secrets.get(name)
        return None if data is None else {"data": data}

    async def patch_flow_status(self, namespace: str, name: str,
                                status: dict[str, Any]) -> bool:
        self.patches.append(status)
        return True

    async def create_event(self, involved: dict[str, Any], *, type: str, reason: str,
                           message: str, component: str, instance: str, count: int,
                           first: str, last: str) -> str:
        self.events.append({"type": type, "reason": reason, "message": message})
        return f"e{len(self.events)}"

    async def patch_event(self, namespace: str, name: str, *, count: int, last: str,
                          message: str) -> bool:
        return True

    def record(self) -> dict[str, Any]:
        [patch] = self.patches
        return patch["notification"]  # type: ignore[no-any-return]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


def notifier(cluster: Cluster, settings: NotifySettings = FAST) -> Notifier:
    return Notifier(cluster, EventPoster(cluster, identity="op", interval=0.01), settings)


async def settle(n: Notifier) -> None:
    """Every sending under way has ended (and its Events are written)."""
    for watched in list(n._flows.values()):
        if watched.task is not None:
            await watched.task
    await n.events.drain()
    await n.close()


async def test_a_succeeded_flow_posts_one_cloudevent_and_records_it(
        receiver: Receiver) -> None:
    cluster = Cluster()
    cluster.set_url(receiver.url("/hook?token=s3cret"))
    n = notifier(cluster)

    n.watch(UID, "etl", "orders", NOTIFY, {})  # admitted while running: nothing owed yet
    n.finished(UID, finished())
    n.finished(UID, finished())  # the same ending reported again
    await settle(n)

    [got] = receiver.got
    assert got.content_type == CONTENT_TYPE and got.query == "token=s3cret"
    event = got.body
    assert {k: event[k] for k in ("specversion", "type", "source", "subject", "id", "time")} == {
        "specversion": "1.0", "type": "dev.kflow.flow.succeeded",
        "source": "/apis/kflow.dev/v1alpha1/namespaces/etl/flows/orders", "subject": UID,
        "id": f"{UID}/Succeeded/2026-11-30T07:01:30Z", "time": "2026-11-30T07:01:30Z"}
    assert event["data"]["phase"] == "Succeeded" and event["data"]["progress"] == "3/3"
    assert event["data"]["counts"] == {"completed": 3, "failed": 0}
    assert event["data"]["duration"] == "1m30s"
    record = cluster.record()
    assert (record["id"], record["state"], record["attempts"]) == (event["id"], "Delivered", 1)
    assert [e["reason"] for e in cluster.events] == ["NotificationSent"]
    assert "s3cret" not in cluster.events[0]["message"]


async def test_a_failed_flow_sends_the_failed_type_with_its_first_failures(
        receiver: Receiver) -> None:
    cluster = Cluster()
    cluster.set_url(receiver.url())
    n = notifier(cluster)
    failures = [{"node": "charge", "attempt": 3, "error": "card declined"}]

    n.watch(UID, "etl", "orders", NOTIFY, {})
    n.finished(UID, finished("Failed", firstFailures=failures))
    await settle(n)

    [event] = receiver.events()
    assert event["type"] == "dev.kflow.flow.failed"
    assert event["data"]["firstFailures"] == failures


async def test_errors_are_retried_until_the_receiver_takes_it(receiver: Receiver) -> None:
    cluster = Cluster()
    cluster.set_url(receiver.url())
    receiver.answers = [503, 500]
    n = notifier(cluster)

    n.watch(UID, "etl", "orders", NOTIFY, finished())  # seen finished: owed at once
    await settle(n)

    ids = {e["id"] for e in receiver.events()}
    assert len(receiver.got) == 3 and ids == {event_id(UID, finished())}
    assert cluster.record()["state"] == "Delivered" and cluster.record()["attempts"] == 3


async def test_a_receiver_that_is_down_gets_it_once_it_is_up() -> None:
    receiver = Receiver()  # not started: connections are refused
    cluster = Cluster()
    cluster.set_url(receiver.url())
    n = notifier(cluster, NotifySettings(attempts=200, backoff_base=0.05, backoff_cap=0.1))
    n.watch(UID, "etl", "orders", NOTIFY, finished("Cancelled"))
    await asyncio.sleep(0.3)  # a few refused tries
    assert not cluster.patches

    receiver.start()
    try:
        await settle(n)
    finally:
        receiver.stop()

    [event] = receiver.events()
    assert event["type"] == "dev.kflow.flow.cancelled"
    assert cluster.record()["state"] == "Delivered" and cluster.record()["attempts"] > 1


async def test_giving_up_marks_it_failed_and_warns_naming_the_host_only() -> None:
    receiver = Receiver()  # never started
    cluster = Cluster()
    cluster.set_url(f"http://user:pw@127.0.0.1:{receiver.port}/hooks/T0KEN?sig=abc")
    n = notifier(cluster)

    n.watch(UID, "etl", "orders", NOTIFY, finished())
    await settle(n)

    record = cluster.record()
    assert record["state"] == "Failed" and record["attempts"] == FAST.attempts
    [warning] = cluster.events
    assert warning["type"] == "Warning" and warning["reason"] == "NotificationFailed"
    assert f"127.0.0.1:{receiver.port}" in warning["message"]
    assert "gave up after 4 tries" in warning["message"]
    for secret in ("T0KEN", "sig=abc", "pw", "user"):
        assert secret not in warning["message"] and secret not in record["message"]


async def test_a_refusal_of_the_request_itself_is_not_retried(receiver: Receiver) -> None:
    cluster = Cluster()
    cluster.set_url(receiver.url())
    receiver.answers = [400]
    n = notifier(cluster)

    n.watch(UID, "etl", "orders", NOTIFY, finished())
    await settle(n)

    assert len(receiver.got) == 1
    assert cluster.record()["state"] == "Failed" and cluster.record()["attempts"] == 1
    assert "HTTP 400" in cluster.record()["message"]


async def test_a_missing_secret_says_which_and_how_to_fix_it() -> None:
    cluster = Cluster()
    n = notifier(cluster, NotifySettings(attempts=1))

    n.watch(UID, "etl", "orders", NOTIFY, finished())
    await settle(n)

    message = cluster.record()["message"]
    assert "Secret etl/hooks (spec.notify.webhook.secretKeyRef) does not exist" in message
    assert "key 'url'" in message


async def test_a_secret_without_the_key_or_an_http_url_is_named(receiver: Receiver) -> None:
    cluster = Cluster()
    cluster.set_url(receiver.url(), key="other")
    n = notifier(cluster, NotifySettings(attempts=1))
    n.watch(UID, "etl", "orders", NOTIFY, finished())
    await settle(n)
    assert "has no key 'url'" in cluster.record()["message"]

    cluster = Cluster()
    cluster.set_url("ftp://files.example.com/x")
    n = notifier(cluster, NotifySettings(attempts=1))
    n.watch(UID, "etl", "orders", NOTIFY, finished())
    await settle(n)
    assert "does not hold an http(s) URL" in cluster.record()["message"]
    assert not receiver.got


async def test_a_new_operator_sends_what_no_record_says_was_sent(receiver: Receiver) -> None:
    cluster = Cluster()
    cluster.set_url(receiver.url())
    status = finished()
    delivered = {"id": event_id(UID, status), "state": "Delivered", "attempts": 1}
    given_up = {"id": event_id(UID, status), "state": "Failed", "attempts": 8}
    earlier = {"id": event_id(UID, finished("Failed")), "state": "Delivered", "attempts": 1}

    for record in (delivered, given_up):
        n = notifier(cluster)
        n.watch(UID, "etl", "orders", NOTIFY, {**status, "notification": record})
        await settle(n)
    assert receiver.got == []

    # Recorded for an earlier ending (failed, retried, now succeeded), or not at all.
    for record in (earlier, None):
        n = notifier(cluster)
        n.watch(UID, "etl", "orders", NOTIFY, {**status, "notification": record})
        await settle(n)
    assert [e["type"] for e in receiver.events()] == ["dev.kflow.flow.succeeded"] * 2


async def test_a_flow_without_notify_sends_nothing(receiver: Receiver) -> None:
    cluster = Cluster()
    cluster.set_url(receiver.url())
    n = notifier(cluster)
    n.watch(UID, "etl", "orders", None, {})
    n.finished(UID, finished())
    await settle(n)
    assert receiver.got == [] and cluster.patches == []


class Forbidden(Exception):
    status, reason = 403, "Forbidden"


async def test_a_secret_the_operator_may_not_read_says_what_to_grant() -> None:
    cluster = Cluster()

    async def refuse(namespace: str, name: str) -> dict[str, Any] | None:
        raise Forbidden("(403)\nReason: Forbidden\nHTTP response headers: ...")

    cluster.read_secret = refuse  # type: ignore[method-assign]
    n = notifier(cluster, NotifySettings(attempts=1))
    n.watch(UID, "etl", "orders", NOTIFY, finished())
    await settle(n)

    message = cluster.record()["message"]
    assert "may not read Secret etl/hooks" in message
    assert "get on secrets in namespace etl" in message and "headers" not in message
