"""The Flow status loop during a Redis outage: it says so once, keeps the flows it owes a
patch, and patches them when Redis is back (a real redis-server killed and restarted)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from kflow.engine import Engine
from kflow.kube.status import FlowView, StatusPatcher
from kflow.store.connect import connect
from kflow.store.outage import RedisOutage
from tests.integration.engine_kit import build, new_ref, node
from tests.integration.faulty_redis import (  # noqa: F401
    OwnRedis,
    assert_outage_logged_once,
    own_redis_fixture,
    wait_until,
)

pytestmark = pytest.mark.redis


async def test_status_patches_wait_out_an_outage_and_log_it_once(
        own_redis: OwnRedis, caplog: pytest.LogCaptureFixture) -> None:
    client = await connect(own_redis.url, retries=1, retry_backoff_cap=0.1)
    engine = Engine(client, prefix="status-outage")
    refs = [new_ref() for _ in range(3)]
    for ref in refs:
        await engine.submit(ref, build(node("a")))
    patched: dict[str, list[dict[str, Any]]] = {ref.name: [] for ref in refs}

    async def patch(namespace: str, name: str, status: dict[str, Any]) -> bool:
        patched[name].append(status)  # what the API server would be sent
        return True

    outage = RedisOutage(max_wait=0.3)
    patcher = StatusPatcher(patch=patch, snapshot=engine.snapshot,
                            on_phase_change=lambda view, previous: None, interval=0.05,
                            outage=outage)
    for ref in refs:
        patcher.track(FlowView(uid=ref.uid, namespace=ref.namespace, name=ref.name,
                               valid=True))
    caplog.set_level(logging.INFO)
    loop = asyncio.ensure_future(patcher.run())
    try:
        for ref in refs:
            patcher.mark(ref.uid)
        await wait_until(lambda: all(patched.values()), "the first patches")
        own_redis.kill()
        for _ in range(10):  # the flows keep asking for patches during the outage
            for ref in refs:
                patcher.mark(ref.uid)
            await asyncio.sleep(0.2)
        assert outage.down
        before = {name: len(statuses) for name, statuses in patched.items()}
        own_redis.start()
        await wait_until(lambda: not outage.down, "the status loop to see Redis back")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await client.aclose()

    assert_outage_logged_once(caplog.records)
    assert all(n >= 1 for n in before.values())
