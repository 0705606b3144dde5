"""Adding flows, dispatch order and limits, fencing, and flow control, on Redis and on a cluster."""

from __future__ import annotations

import asyncio

import pytest

from kflow.engine import Engine, FlowStateError, QueueConfig
from kflow.store.keys import queue_member
from tests.integration.engine_kit import (
    NS,
    N,
    build,
    delayed_member,
    new_ref,
    node,
    qid,
    run_flow,
    take_all,
    take_node,
)


def fan_out(width: int, queue: str = "work") -> list[N]:
    leaves = [node(f"leaf-{i:05d}", queue=queue, data={"i": i}) for i in range(width)]
    return [node("sum", *(n.name for n in leaves), queue="agg"), *leaves]


async def test_add_writes_in_chunks_and_is_idempotent(engine: Engine) -> None:
    engine.chunk_nodes = 7
    ref = new_ref()
    flow = build(*fan_out(50))
    assert await engine.submit(ref, flow)
    meta = await engine.store.meta(ref.id)
    assert meta is not None and meta.chunks == meta.written == 8  # 51 nodes / 7 per chunk
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Running" and snap.total == 51
    assert snap.counts == {"ready": 50, "waiting-children": 1}
    assert await engine.queue_depth(qid()) == (50, 0, 0)
    assert not await engine.submit(ref, flow)  # already there: nothing written twice
    assert (await engine.snapshot(ref.id)).counts == {"ready": 50, "waiting-children": 1}
    assert await engine.queue_depth(qid()) == (50, 0, 0)


async def test_interrupted_add_is_finished_by_adding_again(engine: Engine) -> None:
    engine.chunk_nodes = 10
    ref = new_ref()
    flow = build(*fan_out(30))
    chunks = engine._chunks(flow)
    # A crash after the first chunk: meta Pending, one chunk written, nothing queued.
    await engine.store.create_flow(ref.id, ref.name, total=31, roots=1, ttl_seconds=None,
                                   chunks=len(chunks), queues=["agg", "work"])
    await engine.store.add_nodes(ref.id, 1, chunks[0])
    assert (await engine.snapshot(ref.id)).phase == "Pending"
    assert await take_all(engine) == []
    assert await engine.submit(ref, flow)
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Running"
    assert snap.counts == {"ready": 30, "waiting-children": 1}
    assert len(await take_all(engine)) == 30


async def test_diamond_shared_node_runs_once_and_both_parents_see_its_value(
        engine: Engine) -> None:
    ref = new_ref("order")
    flow = build(
        node("send-confirmation", "fulfill-order", queue="confirm"),
        node("fulfill-order", "reserve-inventory", "prepare-shipping", queue="fulfil"),
        node("reserve-inventory", "process-payment", queue="inventory"),
        node("prepare-shipping", "process-payment", queue="shipping"),
        node("process-payment", "validate-items", "validate-customer", queue="payment",
             priority=1),
        node("validate-items", queue="validate", on_failure="ignore"),
        node("validate-customer", queue="validate"),
    )
    assert await engine.submit(ref, flow)
    run = await run_flow(engine, ref.id, set(flow.queues), {
        "process-payment": lambda a, v: {"paid": 17},
        "reserve-inventory": lambda a, v: v["process-payment"]["paid"] + 1,
        "prepare-shipping": lambda a, v: v["process-payment"]["paid"] + 2,
    })
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    assert run.runs["process-payment"] == 1
    assert all(count == 1 for count in run.runs.values())
    assert run.seen_children["reserve-inventory"] == {"process-payment": {"paid": 17}}
    assert run.seen_children["prepare-shipping"] == {"process-payment": {"paid": 17}}
    assert run.seen_children["fulfill-order"] == {"reserve-inventory": 18,
                                                  "prepare-shipping": 19}
    assert await engine.children_values(ref.id, "process-payment") == {
        "validate-items": "validate-items", "validate-customer": "validate-customer"}


async def test_priority_order_then_fifo_across_flows(engine: Engine) -> None:
    first, second = new_ref("first"), new_ref("second")
    await engine.submit(first, build(node("a-low", priority=5), node("a-top", priority=0),
                                     node("a-mid", priority=2)))
    await engine.submit(second, build(node("b-low", priority=5), node("b-top", priority=0),
                                      node("b-mid", priority=2)))
    order = [a.node for _ in range(6) for a in await engine.take(qid(), 1, owner="t")]
    assert order == ["a-top", "b-top", "a-mid", "b-mid", "a-low", "b-low"]


async def test_concurrency_never_exceeded_by_concurrent_takers(engine: Engine) -> None:
    await engine.configure_queue(qid(), QueueConfig(concurrency=3))
    ref = new_ref()
    await engine.submit(ref, build(*(node(f"n{i}") for i in range(20))))
    batches = await asyncio.gather(*(engine.take(qid(), 2, owner=f"w{i}") for i in range(10)))
    running = [a for batch in batches for a in batch]
    assert len(running) == 3
    assert await engine.queue_depth(qid()) == (17, 3, 0)
    finished = 0
    while running:
        done = running.pop()
        await engine.complete(ref.id, done.node, done.token, None)
        finished += 1
        batches = await asyncio.gather(*(engine.take(qid(), 5, owner=f"w{i}") for i in range(4)))
        running += [a for batch in batches for a in batch]
        assert len(running) <= 3
        assert (await engine.queue_depth(qid()))[1] <= 3
    assert finished == 20
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"


async def test_rate_limit_caps_takes_per_window(engine: Engine) -> None:
    await engine.configure_queue(qid(), QueueConfig(rate_max=2, rate_per_ms=60_000))
    ref = new_ref()
    await engine.submit(ref, build(*(node(f"n{i}") for i in range(5))))
    first = await take_all(engine)
    assert len(first) == 2
    for a in first:
        await engine.complete(ref.id, a.node, a.token, 1)
    assert await take_all(engine) == []  # slots are free, but the window is used up
    rate_key = engine.store.queue(qid()).rate
    times = [int(s) for _, s in await engine.store.redis.zrange(rate_key, 0, -1, withscores=True)]
    assert len(times) == 2 and max(times) - min(times) < 60_000
    await engine.configure_queue(qid(), QueueConfig())  # limit lifted: the rest flows
    assert len(await take_all(engine)) == 3


async def test_stale_token_cannot_store_or_complete(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "x"), node("x", attempts=2)))
    old = await take_node(engine, "x")
    # (An attempt that stored its value and then failed would complete with it: see
    # test_engine_committed.py. This one fails before storing.)
    await engine.fail(ref.id, "x", old.token, "boom")  # retry at once (no backoff)
    new = await take_node(engine, "x")
    assert new.attempt == 2 and new.token != old.token
    assert not await engine.store_result(ref.id, "x", old.token, "stale")
    assert not await engine.store_result(ref.id, "x", "made-up", "stale")
    assert await engine.store_result(ref.id, "x", new.token, "fresh")
    stale = await engine.complete(ref.id, "x", old.token)
    assert not stale.accepted
    assert (await engine.node_infos(ref.id))["x"].state == "active"
    outcome = await engine.complete(ref.id, "x", new.token)  # MISSING: the stored value
    assert outcome.accepted and outcome.newly_ready == ["top"]
    assert await engine.children_values(ref.id, "top") == {"x": "fresh"}
    stale_fail = await engine.fail(ref.id, "x", old.token, "late")
    assert not stale_fail.accepted and stale_fail.action == "stale"
    assert (await engine.node_infos(ref.id))["x"].state == "completed"


async def test_duplicate_completion_is_ignored(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "x", "y"), node("x"), node("y")))
    x = await take_node(engine, "x")
    assert (await engine.complete(ref.id, "x", x.token, 1)).accepted
    again = await engine.complete(ref.id, "x", x.token, 2)
    assert not again.accepted and again.newly_ready == []
    infos = await engine.node_infos(ref.id)
    assert infos["x"].result == 1
    assert infos["top"].state == "waiting-children"  # y is still pending: counted once
    assert await engine.store.redis.hget(engine.store.flow(ref.id).pending, "top") == b"1"
    assert (await engine.snapshot(ref.id)).counts["completed"] == 1


async def test_snapshot_counts_progress_and_logs(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "a", "b", "c"), node("a"), node("b"), node("c")))
    a, b, _ = sorted(await take_all(engine), key=lambda x: x.node)
    await engine.update_progress(ref.id, "a", a.token, 40)
    await engine.update_progress(ref.id, "a", "stale", 99)
    await engine.log(ref.id, "a", a.token, "halfway")
    await engine.log(ref.id, "a", "stale", "never")
    await engine.complete(ref.id, "b", b.token, 2)
    snap = await engine.snapshot(ref.id)
    assert snap.counts == {"active": 2, "completed": 1, "waiting-children": 1}
    assert snap.done == 1 and snap.total == 4 and snap.started_at_ms is not None
    assert snap.finished_at_ms is None
    infos = await engine.node_infos(ref.id)
    assert infos["a"].progress == 40 and infos["a"].attempt == 1
    assert [line["msg"] for line in await engine.logs(ref.id, node="a")] == ["halfway"]


async def test_suspend_stops_dispatch_and_resume_restarts_it(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "a", "b"), node("a"), node("b")))
    await engine.suspend(ref.id)
    assert (await engine.snapshot(ref.id)).phase == "Suspended"
    assert await take_all(engine) == []
    assert (await engine.snapshot(ref.id)).counts["ready"] == 2
    await engine.resume(ref.id)
    assert (await engine.snapshot(ref.id)).phase == "Running"
    running = await take_all(engine)
    assert sorted(a.node for a in running) == ["a", "b"]
    # A child completing while suspended unlocks its parent, but the parent waits for resume.
    await engine.complete(ref.id, "a", running[0].token if running[0].node == "a"
                          else running[1].token, 1)
    await engine.suspend(ref.id)
    b = next(a for a in running if a.node == "b")
    assert (await engine.complete(ref.id, "b", b.token, 2)).newly_ready == ["top"]
    assert await take_all(engine) == []
    await engine.resume(ref.id)
    assert [a.node for a in await take_all(engine)] == ["top"]


async def test_a_flow_submitted_suspended_never_reaches_its_queues_before_resume(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, build(node("top", "a", "b"), node("a"), node("b")),
                               suspended=True)
    assert (await engine.snapshot(ref.id)).phase == "Suspended"
    # Not even briefly on the queue: a taker racing the submit finds nothing.
    assert await engine.queue_depth(qid()) == (0, 0, 0)
    assert await take_all(engine) == []
    await engine.resume(ref.id)
    assert sorted(a.node for a in await take_all(engine)) == ["a", "b"]


async def test_cancel_stops_the_flow_and_reports_running_attempts(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "a", "b"), node("a"), node("b", priority=9)))
    a = (await engine.take(qid(), 1, owner="t"))[0]
    assert a.node == "a"
    assert await engine.cancel(ref.id) == [("a", a.token)]
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Cancelled" and snap.finished_at_ms is not None
    assert await take_all(engine) == []  # b is not handed out
    assert (await engine.complete(ref.id, "a", a.token, 1)).accepted  # recorded, nothing moves
    # What never started is cancelled, and says so; the running attempt kept its outcome.
    assert (await engine.snapshot(ref.id)).counts == {"completed": 1, "cancelled": 2}
    assert (await engine.node_infos(ref.id))["b"].error == "not started: the flow was cancelled"
    with pytest.raises(FlowStateError, match="only a Failed flow"):
        await engine.retry_failed(ref.id)


async def test_data_and_timeout_reach_the_attempt(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("a", data={"orderId": "A-17", "n": [1, 2]},
                                        timeout_ms=120_000)))
    (a,) = await take_all(engine)
    assert a.data == {"orderId": "A-17", "n": [1, 2]}
    assert a.timeout_ms == 120_000 and a.attempt == 1
    assert a.flow_name == ref.name and a.namespace == NS and a.queue == "work"
    assert await engine.store.redis.zscore(engine.store.queue(qid()).ready,
                                           queue_member(ref.uid, "a")) is None


async def test_parent_start_delay_counts_from_its_unlock(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "x", delay_ms=60_000), node("x")))
    x = await take_node(engine, "x")
    assert (await engine.complete(ref.id, "x", x.token, 1)).newly_ready == ["top"]
    assert (await engine.node_infos(ref.id))["top"].state == "delayed"
    assert await engine.queue_depth(qid()) == (0, 0, 1)
    due = await engine.store.redis.zscore(engine.store.queue(qid()).delayed,
                                          delayed_member(ref.uid, "top"))
    completed_ms = next(int(e["id"].split("-")[0]) for e in await engine.events(ref.id)
                        if e["type"] == "completed")
    assert abs(due - (completed_ms + 60_000)) <= 2  # both read from the server clock
    assert await engine.promote_due(qid()) == due  # not due yet: stays delayed
    assert await take_all(engine) == []


async def test_empty_flow_and_half_rate_limit_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match=r"spec\.nodes is empty"):
        await engine.submit(new_ref(), build())
    with pytest.raises(ValueError, match="rate_max and rate_per_ms go together"):
        await engine.configure_queue(qid(), QueueConfig(rate_max=5))


def test_build_orders_children_before_parents() -> None:
    flow = build(node("top", "mid"), node("mid", "leaf1", "leaf2"), node("leaf1"), node("leaf2"))
    order = list(flow.nodes)
    assert order.index("mid") > order.index("leaf1")
    assert order.index("top") > order.index("mid")
    assert flow.roots == ("top",)
    assert set(flow.leaves) == {"leaf1", "leaf2"}
    assert flow.nodes["leaf1"].parents == ("mid",)


async def test_lifo_nodes_are_taken_before_those_queued_earlier_of_the_same_priority(
        engine: Engine) -> None:
    # BullMQ's lifo option: within one priority, the newest lifo node goes first; FIFO
    # nodes keep their order behind them, and a better priority still wins.
    for name, opts in [("fifo-1", {}), ("fifo-2", {}), ("lifo-1", {"lifo": True}),
                       ("lifo-2", {"lifo": True}), ("late", {"lifo": True, "priority": 5}),
                       ("urgent", {"priority": 0})]:
        await engine.submit(new_ref(name), build(node(name, **{"priority": 2, **opts})))
    order = [a.node for _ in range(6) for a in await engine.take(qid(), 1, owner="t")]
    assert order == ["urgent", "lifo-2", "lifo-1", "fifo-1", "fifo-2", "late"]


async def test_a_long_lived_queue_restarts_its_sequence_so_lifo_stays_in_its_priority(
        engine: Engine) -> None:
    # The order key packs priority and a per-queue sequence into one exact double; a queue
    # that has handed out 2^31 members would let a lifo node of a worse priority jump ahead.
    # The sequence starts again whenever the ready set is empty.
    await engine.store.redis.set(engine.store.queue(qid()).seq, 2**31 + 10)
    await engine.submit(new_ref("late"), build(node("late", priority=1, lifo=True)))
    await engine.submit(new_ref("first"), build(node("first", priority=0)))
    order = [a.node for _ in range(2) for a in await engine.take(qid(), 1, owner="t")]
    assert order == ["first", "late"]
