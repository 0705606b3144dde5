"""Script calls of concurrent callers share one pipeline on a single server (Scripts.run_many):
each caller still gets its own replies and errors, in order, and one caller's cancellation or
failure does not reach the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ResponseError

from kflow.api.states import FlowPhase
from kflow.engine import Engine
from kflow.store import scripts as scripts_module
from kflow.store.connect import connect
from tests.integration.engine_kit import build, new_ref, node, qid, take_all

pytestmark = [pytest.mark.asyncio]


@pytest.fixture
async def engine(redis_srv: Any) -> AsyncIterator[Engine]:
    client = await connect(redis_srv.url)
    await client.flushall()
    engine = Engine(client)
    await engine.store.scripts.load()  # as the operator does at start
    try:
        yield engine
    finally:
        await client.aclose()


def count_pipelines(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of calls in each pipeline the engine's scripts send from now on."""
    sizes: list[int] = []
    scripts = engine.store.scripts
    send = scripts._pipeline

    async def counted(calls: list[Any], functions: bool) -> list[Any]:
        sizes.append(len(calls))
        return await send(calls, functions)

    monkeypatch.setattr(scripts, "_pipeline", counted)
    return sizes


@pytest.mark.redis
async def test_flows_added_at_once_share_one_round_trip(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    refs = [new_ref(f"f{i}") for i in range(20)]
    sizes = count_pipelines(engine, monkeypatch)
    added = await asyncio.gather(*(
        engine.submit(ref, build(*(node(f"leaf{j}") for j in range(i % 3 + 1)),
                                 node("root", *(f"leaf{j}" for j in range(i % 3 + 1)))))
        for i, ref in enumerate(refs)))
    assert added == [True] * 20
    # Each flow's add and the enqueue of its leaves: 40 calls, one pipeline (not 20).
    assert sizes == [40], sizes
    for i, ref in enumerate(refs):
        snapshot = await engine.snapshot(ref.id)
        assert snapshot.phase is FlowPhase.RUNNING
        assert snapshot.total == i % 3 + 2
    # Every leaf reached the queue, each flow's own: 20 + 20 + 20 of 1, 2, 3 leaves.
    taken = await take_all(engine, n=200)
    by_flow: dict[str, int] = {}
    for a in taken:
        by_flow[a.flow_uid] = by_flow.get(a.flow_uid, 0) + 1
    assert by_flow == {ref.uid: i % 3 + 1 for i, ref in enumerate(refs)}


@pytest.mark.redis
async def test_each_caller_gets_its_own_replies_and_errors(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    scripts = engine.store.scripts
    keys = engine.store.queue(qid("batching")).all
    sizes = count_pipelines(engine, monkeypatch)

    def promote(limit: Any) -> tuple[str, Any, list[Any]]:
        return ("queue/promote", keys, [limit])

    good, bad, also_good = await asyncio.gather(
        scripts.run_many([promote(5), promote(6)]),
        scripts.run_many([promote(7), promote("not a number"), promote(8)]),
        scripts.run_many([promote(9)]))
    assert sizes == [6]
    assert all(not isinstance(r, BaseException) for r in [*good, *also_good])
    assert len(good) == 2 and len(also_good) == 1
    assert not isinstance(bad[0], BaseException) and not isinstance(bad[2], BaseException)
    assert isinstance(bad[1], ResponseError)


@pytest.mark.redis
async def test_a_cancelled_caller_does_not_stop_the_others(engine: Engine) -> None:
    refs = [new_ref(f"c{i}") for i in range(5)]
    tasks = [asyncio.create_task(engine.submit(ref, build(node("a"), node("root", "a"))))
             for ref in refs]
    await asyncio.sleep(0)  # each has queued its calls; none has been sent
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    assert [d for i, d in enumerate(done) if i != 2] == [True] * 4
    for i, ref in enumerate(refs):
        if i != 2:
            assert (await engine.snapshot(ref.id)).phase is FlowPhase.RUNNING
    # The cancelled add was sent with the others or not at all; adding it again works.
    await engine.submit(refs[2], build(node("a"), node("root", "a")))
    assert (await engine.snapshot(refs[2].id)).phase is FlowPhase.RUNNING


@pytest.mark.redis
async def test_a_batch_over_the_limit_goes_at_once(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scripts_module, "BATCH_CALLS", 4)
    keys = engine.store.queue(qid("batching")).all
    sizes = count_pipelines(engine, monkeypatch)
    replies = await asyncio.gather(*(
        engine.store.scripts.run_many([("queue/promote", keys, [i + 1])]) for i in range(10)))
    assert len(replies) == 10 and all(len(r) == 1 for r in replies)
    assert sizes == [4, 4, 2], sizes


@pytest.mark.rediscluster
async def test_on_a_cluster_the_calls_go_in_one_pipeline_per_master_each_caller_its_own(
        redis_cluster_srv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await connect(redis_cluster_srv.url)
    try:
        await client.flushall()
        engine = Engine(client)
        await engine.store.scripts.load()
        sizes = count_pipelines(engine, monkeypatch)
        # Queues whose keys hash to different slots, so to several masters.
        calls = [("queue/promote", engine.store.queue(qid(f"q{i}")).all, [i + 1])
                 for i in range(8)]
        bad = ("queue/promote", engine.store.queue(qid("q0")).all, ["not a number"])
        first, second = await asyncio.gather(engine.store.scripts.run_many(calls[:5]),
                                             engine.store.scripts.run_many(
                                                 [calls[5], bad, *calls[6:]]))
        assert sizes == [9], sizes
        assert all(not isinstance(r, BaseException) for r in first)
        assert isinstance(second[1], ResponseError)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(second) if i != 1)
        assert len(first) == 5 and len(second) == 4
    finally:
        await client.aclose()
