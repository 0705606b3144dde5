"""The calls a small flow and a worker's batch cost: one call to add a small flow, inputs
read by the call that starts a node, due delayed nodes promoted by the take itself.

Each test counts the store's script calls (`Scripts.observe`), so a change that brings a
round trip back fails here, and checks the result is the same as on the longer path.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aredis

from kflow.api import FlowId
from kflow.api.states import AddStatus, FlowPhase
from kflow.engine import Engine
from kflow.sdk import worker as worker_module
from kflow.sdk.worker import Worker, WorkerOptions
from tests.integration.engine_kit import build, new_ref, node, qid

pytestmark = pytest.mark.asyncio


def count_calls(engine: Engine) -> Counter[str]:
    calls: Counter[str] = Counter()
    engine.store.scripts.observe(lambda name, _: calls.update([name]))
    return calls


async def test_a_small_flow_is_added_in_one_call_and_queued_in_one_more(engine: Engine) -> None:
    calls = count_calls(engine)
    ref = new_ref()
    assert await engine.submit(ref, build(node("a"), node("b"), node("root", "a", "b")))
    assert calls == Counter({"flow/add": 1, "queue/enqueue": 1})
    snap = await engine.snapshot(ref.id)
    assert snap.phase is FlowPhase.RUNNING
    assert sorted(a.node for a in await engine.take(qid(), 10, owner="t")) == ["a", "b"]
    # Adding it again changes nothing and says so.
    assert not await engine.submit(ref, build(node("a"), node("b"), node("root", "a", "b")))
    assert await engine.take(qid(), 10, owner="t") == []


async def test_on_one_server_a_small_flow_is_added_and_queued_in_one_round_trip(
        redis_srv: Any) -> None:
    client = aredis.Redis.from_url(redis_srv.url)
    engine = Engine(client)
    trips: list[list[str]] = []
    run, run_many = engine.store.scripts.run, engine.store.scripts.run_many

    async def one(name: str, keys: Any, args: Any) -> Any:
        trips.append([name])
        return await run(name, keys, args)

    async def many(calls: Any) -> Any:
        trips.append([name for name, _, _ in calls])
        return await run_many(calls)

    engine.store.scripts.run, engine.store.scripts.run_many = one, many  # type: ignore
    try:
        ref = new_ref()
        flow = build(node("a"), node("b", queue="other"), node("root", "a", "b"))
        assert await engine.submit(ref, flow)
        assert trips == [["flow/add", "queue/enqueue", "queue/enqueue"]]
        [a] = await engine.take(qid(), 10, owner="t")
        # Added again: nothing is written, the leaves queued with it are refused when taken
        # (a runs, nothing else is ready) and dropped; no node starts twice.
        assert not await engine.submit(ref, flow)
        assert await engine.take(qid(), 10, owner="t") == []
        [b] = await engine.take(qid("other"), 10, owner="t")
        assert b.node == "b"
        assert await client.zcard(engine.store.queue(qid()).ready) == 0
        for attempt in (a, b):
            assert (await engine.complete(ref.id, attempt.node, attempt.token, 1)).accepted
        [root] = await engine.take(qid(), 10, owner="t")
        assert root.node == "root" and root.attempt == 1
    finally:
        await client.aclose()


async def test_a_small_flow_left_pending_by_an_interrupted_add_is_finished(
        engine: Engine) -> None:
    ref = new_ref()
    flow = build(node("a"), node("root", "a"))
    # The add died after creating the record (the chunked path's first call).
    assert await engine.store.create_flow(
        ref.id, ref.name, total=2, roots=1, ttl_seconds=None, chunks=1,
        queues=["work"]) is AddStatus.CREATED
    assert await engine.store.add_flow(
        ref.id, ref.name, total=2, roots=1, ttl_seconds=None, queues=["work"], defaults=None,
        chunk=engine._chunks(flow)[0]) is AddStatus.RESUME  # nothing written twice
    assert await engine.submit(ref, flow)
    [a] = await engine.take(qid(), 10, owner="t")
    assert a.node == "a"
    assert (await engine.snapshot(ref.id)).phase is FlowPhase.RUNNING


async def test_a_flow_bigger_than_one_chunk_takes_the_chunked_path(engine: Engine) -> None:
    engine.chunk_nodes = 2
    calls = count_calls(engine)
    ref = new_ref()
    assert await engine.submit(ref, build(node("a"), node("b"), node("root", "a", "b")))
    assert calls["flow/add"] == 0
    assert calls["flow/add-nodes"] == 2 and calls["flow/activate"] == 1
    assert len(await engine.take(qid(), 10, owner="t")) == 2


async def test_a_take_with_inputs_reads_them_in_the_start_call(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(
        node("ok"), node("bad", on_failure="ignore", attempts=1),
        node("gone", on_failure="continueParent", attempts=1),
        node("root", "ok", "bad", "gone")))
    for a in await engine.take(qid(), 10, owner="t"):
        if a.node == "ok":
            await engine.complete(ref.id, a.node, a.token, {"n": 1})
        else:
            await engine.fail(ref.id, a.node, a.token, f"{a.node} broke")
    calls = count_calls(engine)
    [root] = await engine.take(qid(), 10, owner="t", with_inputs=True)
    assert root.node == "root"
    assert calls["flow/inputs"] == 0 and calls["flow/start"] == 1
    assert root.inputs == ({"ok": {"n": 1}}, {"bad": "bad broke"}, {"gone": "gone broke"})
    # The same as reading them on their own afterwards.
    assert root.inputs == (await engine.inputs_many(ref.id, ["root"]))[0]


async def test_a_take_without_inputs_leaves_them_to_the_runner(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("a")))
    [a] = await engine.take(qid(), 10, owner="t")
    assert a.inputs is None


async def test_the_take_promotes_due_delayed_nodes_in_the_same_call(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("x"), node("late", delay_ms=30)))
    assert await engine.queue_depth(qid()) == (1, 0, 1)
    await asyncio.sleep(0.06)
    calls = count_calls(engine)
    taken = await engine.take(qid(), 10, owner="t")
    assert sorted(a.node for a in taken) == ["late", "x"]
    assert calls["queue/promote"] == 0 and calls["queue/take"] == 1


async def test_the_end_of_a_flow_without_exit_handlers_reads_nothing_more(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    exit_graph = engine.store.exit_graph

    async def counted(flow_id: FlowId) -> tuple[str | None, int | None]:
        reads.append(flow_id.uid)
        return await exit_graph(flow_id)

    monkeypatch.setattr(engine.store, "exit_graph", counted)
    ref = new_ref()
    await engine.submit(ref, build(node("only")))
    [a] = await engine.take(qid(), 1, owner="t")
    outcome = await engine.complete(ref.id, a.node, a.token, 1)
    assert outcome.phase is FlowPhase.SUCCEEDED
    assert reads == []  # the step's reply said the flow has no exit handlers


async def test_a_completion_frees_its_hold_and_queues_the_parent_in_one_queue_call(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("child"), node("parent", "child")))
    [a] = await engine.take(qid(), 1, owner="t")
    assert await engine.queue_depth(qid()) == (0, 1, 0)
    calls = count_calls(engine)
    direct: list[str] = []
    zrem = engine.store.redis.zrem

    async def counted_zrem(*args: object) -> object:
        direct.append("zrem")
        return await zrem(*args)

    monkeypatch.setattr(engine.store.redis, "zrem", counted_zrem)
    outcome = await engine.complete(ref.id, a.node, a.token, 7)
    assert outcome.newly_ready == ["parent"]
    assert calls == Counter({"flow/complete": 1, "queue/enqueue": 1}) and direct == []
    assert await engine.queue_depth(qid()) == (1, 0, 0)  # hold freed, parent queued


async def test_a_worker_takes_half_its_concurrency_at_a_time(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(*(node(f"n{i}") for i in range(40))))

    async def handler(job: object) -> int:
        await asyncio.sleep(0)
        return 1

    worker = Worker(engine, str(qid()), handler, WorkerOptions(concurrency=20, poll_max_s=0.01))
    assert worker.batch == 10
    running = asyncio.create_task(worker.run())
    while worker.stats["completed"] < 40:
        await asyncio.sleep(0.01)
    worker.stop()
    await running
    seen = [n for _, n in await engine.queue_takes(qid())]
    assert sum(seen) == 40 and max(seen) <= 10  # two batches in flight, not one of 20
    assert worker.stats["max_running"] <= 20  # takes in flight never overbook the slots
    assert (await engine.snapshot(ref.id)).phase is FlowPhase.SUCCEEDED
    with pytest.raises(ValueError, match="batch 0"):
        WorkerOptions(batch=0)


async def test_a_worker_takes_at_once_what_its_own_completion_made_ready(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker that finds its queue empty waits before it looks again, longer each time (up
    # to poll_max_s). A parent that the worker's own completion makes ready on that queue
    # must not wait that out: with 300 ms handlers and the default poll, each step of a
    # chain sat ~55 ms in the queue. Here an empty queue makes the worker wait an hour, so
    # the chain finishes only if the completion wakes the worker.
    monkeypatch.setattr(worker_module, "IDLE_POLL_FIRST_S", 3600.0)
    ref = new_ref()
    await engine.submit(ref, build(node("a"), node("b", "a"), node("root", "b")))

    async def handler(job: object) -> int:
        return 1

    # Without handing over (test_engine_handover): each step goes through the queue.
    worker = Worker(engine, str(qid()), handler,
                    WorkerOptions(concurrency=1, poll_max_s=3600.0, handover=False))
    running = asyncio.create_task(worker.run())
    try:
        async def chain_done() -> None:
            while worker.stats["completed"] < 3:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(chain_done(), 20)  # a hang guard: an hour without the wake
    finally:
        worker.stop()
        await running
    assert (await engine.snapshot(ref.id)).phase is FlowPhase.SUCCEEDED
    assert worker.stats["taken"] == 3  # each node once


async def test_a_chains_start_and_completion_each_read_the_flows_record_once(
        redis_srv: Any) -> None:
    # Inside a script every Redis command costs about as much as the work it does, so a step
    # reads the flow's meta hash once (phase, suspended, names, roots left, expiry) and keeps
    # what it writes there in step: a chain's completion used to read it five times.
    client = aredis.Redis.from_url(redis_srv.url)
    engine = Engine(client)
    threshold = (await client.config_get("slowlog-log-slower-than"))["slowlog-log-slower-than"]
    try:
        ref = new_ref()
        await engine.submit(ref, build(node("a"), node("b", "a"), node("root", "b")))
        [a] = await engine.take(qid(), 1, owner="t")
        await client.config_set("slowlog-log-slower-than", 0)  # every command, inner ones too
        await client.slowlog_reset()
        await engine.complete(ref.id, a.node, a.token, 1)
        [b] = await engine.take(qid(), 1, owner="t")
        log = list(reversed(await client.slowlog_get(10_000)))
    finally:
        await client.config_set("slowlog-log-slower-than", threshold)
        await client.aclose()
    assert b.node == "b"
    meta = engine.store.flow(ref.id).meta.encode()
    # A script's own commands are logged before the FCALL (or EVALSHA) that ran them; one
    # with none was refused (the library was loaded and the script called again).
    reads: list[int] = []
    inner = touched = 0
    for entry in log:
        words = entry["command"].split()
        if words[0].upper() in (b"FCALL", b"EVALSHA"):
            if inner and words[3:4] == [meta]:  # a flow script: its first key is meta
                reads.append(touched)
            inner = touched = 0
        elif words[0].upper() not in (b"SLOWLOG", b"SCRIPT", b"FUNCTION"):
            inner += 1
            touched += words[1:2] == [meta]
    assert reads == [1, 1]  # flow/complete of a, flow/start of b


async def test_a_workers_completion_names_the_queue_and_reads_no_spec(redis_srv: Any) -> None:
    # The worker knows each node's queue from its take, so completing does not read the
    # node's spec for it (one HGET and one JSON decode per node); the hold is still freed.
    client = aredis.Redis.from_url(redis_srv.url)
    engine = Engine(client)
    threshold = (await client.config_get("slowlog-log-slower-than"))["slowlog-log-slower-than"]
    try:
        ref = new_ref()
        work, other = f"w-{ref.uid}", f"o-{ref.uid}"  # the server is shared: queues of its own
        await engine.submit(ref, build(node("a", queue=work), node("b", queue=other),
                                       node("root", "a", "b", queue=work)))
        [a] = await engine.take(qid(work), 1, owner="t")
        await client.config_set("slowlog-log-slower-than", 0)
        await client.slowlog_reset()
        [outcome] = await engine.complete_attempts([(a, 1)])
        log = await client.slowlog_get(10_000)
    finally:
        await client.config_set("slowlog-log-slower-than", threshold)
    try:
        assert outcome.accepted
        spec = engine.store.flow(ref.id).spec.encode()
        assert not [e for e in log if e["command"].split()[1:2] == [spec]]
        assert await client.zcard(engine.store.queue(qid(work)).active) == 0  # hold freed
        [b] = await engine.take(qid(other), 1, owner="t")
        assert (await engine.complete(ref.id, "b", b.token, 2)).accepted  # reads it: no hint
        [root] = await engine.take(qid(work), 1, owner="t")
        assert root.node == "root" and root.inputs is None
        assert await engine.children_values(ref.id, "root") == {"a": 1, "b": 2}
    finally:
        await client.aclose()
