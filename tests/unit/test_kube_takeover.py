"""Every Flow is admitted once per operator process, whichever handler meets it first: its
first event (a standby that takes over finds Flows kopf met first in an admission review, and
kopf resumes none of those) or kopf's resume handler (kflow.kube.handlers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
import pytest
import redis.asyncio as aioredis

from kflow.engine import Engine
from kflow.kube.handlers import (
    DIFFBASE_KEY,
    KOPF_PREFIX,
    admitted_before,
    flow_admitted,
    flow_event,
)
from kflow.kube.runtime import Runtime
from kflow.settings import Settings
from tests.unit.test_kube_metrics_redis import KubeRecorder

ADMITTED = {f"{KOPF_PREFIX}/{DIFFBASE_KEY}": "{}"}


def flow(uid: str = "u1", annotations: dict[str, str] | None = None,
         deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "namespace": "ns", "name": "f",
                            "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {"metadata": meta, "spec": {}}


def test_a_flow_kopf_handled_before_is_one_to_resume() -> None:
    assert admitted_before(flow(annotations=ADMITTED))


def test_a_new_flow_is_left_to_the_create_handler() -> None:
    # kopf writes its copy only once the create handler succeeded.
    assert not admitted_before(flow(annotations={"other": "x"}))
    assert not admitted_before(flow())


def test_a_flow_being_deleted_is_left_to_the_finalizer() -> None:
    assert not admitted_before(flow(annotations=ADMITTED, deleting=True))


class Admissions:
    """The runtime's Flow handling with its admission recorded instead of run (what it does
    is the integration and e2e tests' business); `failures`: how many admissions raise."""

    def __init__(self, failures: int = 0, client: aioredis.Redis | None = None) -> None:
        client = client or aioredis.Redis()  # never connected unless a test passes its own
        self.runtime = Runtime(Settings(), Engine(client, prefix="takeover"), KubeRecorder(),
                               client)
        self.memo = kopf.Memo(runtime=self.runtime)
        self.admitted: list[str] = []
        self.failures = failures
        self.runtime.flows._admit = self._admit  # type: ignore[method-assign]
        self.runtime.flows.observe = self._observe  # type: ignore[method-assign]

    async def _admit(self, body: Mapping[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Redis is away")
        self.admitted.append(body["metadata"]["uid"])

    async def _observe(self, body: Mapping[str, Any]) -> None:
        pass


async def test_resume_leaves_a_flow_its_first_event_admitted() -> None:
    # The same pass over one event: the event handler, then kopf's resume handler, each with
    # the same copy of the Flow. A second admission from that copy would switch a changed
    # spec's run again (the copy's status predates the first switch).
    case, body = Admissions(), flow(annotations=ADMITTED)
    await flow_event(type=None, body=body, memo=case.memo)
    await flow_admitted(body=body, memo=case.memo)
    await flow_event(type="MODIFIED", body=body, memo=case.memo)
    assert case.admitted == ["u1"]


async def test_a_taken_over_flow_is_admitted_by_its_event_alone() -> None:
    case = Admissions()
    await flow_event(type=None, body=flow(annotations=ADMITTED), memo=case.memo)
    assert case.admitted == ["u1"]


async def test_a_new_flow_is_admitted_by_the_create_handler_alone() -> None:
    case, body = Admissions(), flow()
    await flow_event(type="ADDED", body=body, memo=case.memo)
    assert case.admitted == []
    await flow_admitted(body=body, memo=case.memo)
    assert case.admitted == ["u1"]


async def test_an_admission_that_failed_is_made_again_by_kopfs_retried_handler() -> None:
    case, body = Admissions(failures=1), flow(annotations=ADMITTED)
    with pytest.raises(ConnectionError):  # kopf logs an event handler's error and goes on
        await flow_event(type=None, body=body, memo=case.memo)
    await flow_admitted(body=body, memo=case.memo)
    assert case.admitted == ["u1"]


@pytest.mark.redis
async def test_a_deleted_flow_is_forgotten(redis_srv: Any) -> None:
    client = aioredis.Redis.from_url(redis_srv.url)
    case, body = Admissions(client=client), flow(annotations=ADMITTED)
    try:
        await flow_event(type=None, body=body, memo=case.memo)
        assert case.runtime.flows.admitted("u1")
        await case.runtime.flows.delete(body)
        assert not case.runtime.flows.admitted("u1")
    finally:
        await client.aclose()
