"""`kflow-run` when Redis goes away while a node's result is recorded: the attempt is kept."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from kflow.api.pods import EXIT_INFRASTRUCTURE
from kflow.engine import Engine
from kflow.kube.jobs import classify_failure
from kflow.sdk.run import EXIT_OK, RunSettings, run_attempt
from kflow.sdk.worker import Worker, WorkerOptions
from kflow.settings import RedisSettings
from kflow.store.connect import connect
from tests.integration import run_handlers
from tests.integration.engine_kit import build, new_ref, node, take_node
from tests.integration.faulty_redis import (  # noqa: F401
    OwnRedis,
    assert_outage_logged_once,
    own_redis_fixture,
    wait_until,
)

pytestmark = pytest.mark.redis

HANDLER = "tests.integration.run_handlers:charge_when_released"


def _settings(attempt: Any, termination_log: Path, patience: float) -> RunSettings:
    return RunSettings(flow_uid=attempt.flow_uid, flow_name="pay", namespace=attempt.namespace,
                       node=attempt.node, queue=attempt.queue, attempt=attempt.attempt,
                       token=attempt.token, data="{}", termination_log=str(termination_log),
                       redis_patience_s=patience)


async def test_redis_down_while_the_result_is_recorded_is_an_infrastructure_failure(
        own_redis: OwnRedis, tmp_path: Path) -> None:
    client = await connect(own_redis.url)
    engine = Engine(client)
    ref = new_ref()
    await engine.submit(ref, build(node("pay")))  # one attempt: a spent one fails the node
    attempt = await take_node(engine, "pay")
    run_handlers.release = asyncio.Event()
    log = tmp_path / "termination-log"
    run = asyncio.ensure_future(run_attempt(
        HANDLER, _settings(attempt, log, patience=1.0),
        RedisSettings(url=own_redis.url, socket_timeout=0.5, retries=1,
                      retry_backoff_cap=0.1)))
    await asyncio.sleep(0.5)  # the handler is running
    own_redis.freeze(True)  # Redis stops answering (its data stays)
    run_handlers.release.set()
    code = await asyncio.wait_for(run, 60)
    own_redis.freeze(False)
    message = log.read_text()
    assert code == EXIT_INFRASTRUCTURE, message
    assert "Redis unreachable" in message and "recording the result" in message

    # The operator reads that exit from the pod: an infrastructure failure, not the code's.
    pod = {"metadata": {"name": "p", "creationTimestamp": "2026-11-30T00:00:00Z"},
           "spec": {"containers": [{"name": "main"}]},
           "status": {"containerStatuses": [{"name": "main", "state": {"terminated": {
               "exitCode": code, "reason": "Error", "message": message}}}]}}
    failure = classify_failure({"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}, [pod])
    assert failure.infrastructure, failure
    try:
        # A command the pod wrote before Redis froze is run when it thaws: whether the result
        # got that far depends on the moment of the freeze. Either way the attempt is not
        # spent and its work counts once: a stored result completes the node (the handler's
        # side effects are committed), else the node runs again although it had one attempt.
        stored = await client.hget(engine.store.flow(attempt.flow_id).result, "pay")
        outcome = await engine.fail(attempt.flow_id, "pay", attempt.token, failure.error,
                                    infrastructure=failure.infrastructure)
        assert outcome.accepted and outcome.action != "failed"
        infos = await engine.node_infos(attempt.flow_id)
        if stored is not None:
            assert infos["pay"].state == "completed" and infos["pay"].result == {"charged": 1}
            assert infos["pay"].attempt == 1
        else:
            again = await take_node(engine, "pay")
            assert again.token != attempt.token
    finally:
        await client.aclose()


async def test_a_short_outage_while_the_result_is_recorded_is_waited_out(
        own_redis: OwnRedis, tmp_path: Path) -> None:
    client = await connect(own_redis.url)
    engine = Engine(client)
    ref = new_ref()
    await engine.submit(ref, build(node("pay")))
    attempt = await take_node(engine, "pay")
    run_handlers.release = asyncio.Event()
    run = asyncio.ensure_future(run_attempt(
        HANDLER, _settings(attempt, tmp_path / "termination-log", patience=60.0),
        RedisSettings(url=own_redis.url, socket_timeout=0.5, retries=1,
                      retry_backoff_cap=0.1)))
    await asyncio.sleep(0.5)
    own_redis.freeze(True)
    run_handlers.release.set()
    await asyncio.sleep(2.0)  # the pod is waiting for Redis, not failing
    assert not run.done()
    own_redis.freeze(False)
    try:
        assert await asyncio.wait_for(run, 60) == EXIT_OK
        infos = await engine.node_infos(attempt.flow_id)
        assert infos["pay"].result == {"charged": 1}
    finally:
        await client.aclose()


async def test_a_worker_waits_out_an_outage_before_completing_and_spends_no_attempt(
        own_redis: OwnRedis, caplog: pytest.LogCaptureFixture) -> None:
    client = await connect(own_redis.url, socket_timeout=0.5, retries=1, retry_backoff_cap=0.1)
    engine = Engine(client)
    ref = new_ref()
    await engine.submit(ref, build(node("pay")))  # one attempt: a spent one fails the node
    run_handlers.release = asyncio.Event()
    caplog.set_level(logging.INFO)
    worker = Worker(engine, f"{ref.namespace}/work", run_handlers.charge_when_released,
                    WorkerOptions(concurrency=1, lock_ms=60_000))
    running = asyncio.ensure_future(worker.run())
    try:
        await wait_until(lambda: bool(worker.running), "the worker to take the node")
        own_redis.freeze(True)
        run_handlers.release.set()  # the handler finishes while Redis does not answer
        await wait_until(lambda: worker.outage.down, "the worker to meet the outage")
        await asyncio.sleep(1.5)
        own_redis.freeze(False)
        # The completion sent as Redis froze runs when it thaws, and the worker's own retry
        # of it is then refused (fenced): one of the two counts, never both.
        await wait_until(lambda: worker.stats["completed"] + worker.stats["refused"] == 1,
                         "the completion")
    finally:
        worker.stop()
        await asyncio.wait_for(running, 60)
    try:
        infos = await engine.node_infos(ref.id)
        assert infos["pay"].state == "completed" and infos["pay"].result == {"charged": 1}
        assert infos["pay"].attempt == 1
    finally:
        await client.aclose()
    assert_outage_logged_once(caplog.records)
