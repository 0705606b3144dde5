"""Handing over: a worker's completion starts the node it makes ready on its own queue at once,
for that worker to run next (lua/flow/complete.lua, Engine.complete_attempts).

A chain's step then costs one flow call and one queue call, not a queue round and a start
call more; what must not change is everything the queue guarantees: the node is held under a
lease from the moment it runs, a dead worker's node is found and run again, a rate limit
counts every start, a suspended flow starts nothing, and no node runs twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from kflow.api.states import FlowPhase
from kflow.engine import Attempt, Engine, QueueConfig
from kflow.sdk.worker import Worker, WorkerOptions
from kflow.store import Completion, handed_token
from kflow.store.keys import active_member
from tests.integration.engine_kit import build, new_ref, node, qid
from tests.integration.test_engine_hot_path import count_calls

pytestmark = pytest.mark.asyncio


async def take_one(engine: Engine, queue: str = "work", *, lease_ms: int = 30_000) -> Attempt:
    [a] = await engine.take(qid(queue), 1, owner="w1", lease_ms=lease_ms, with_inputs=True)
    return a


async def active_members(engine: Engine, queue: str = "work") -> dict[str, float]:
    raw = await engine.store.redis.zrange(engine.store.queue(qid(queue)).active, 0, -1,
                                          withscores=True)
    return {(m.decode() if isinstance(m, bytes) else m): s for m, s in raw}


async def run_until(worker: Worker, completed: int) -> Worker:
    """Run the worker until it completed that many nodes (30 s at most), then stop it."""
    running = asyncio.create_task(worker.run())
    try:
        async def done() -> None:
            while worker.stats["completed"] < completed:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(done(), 30)
    finally:
        worker.stop()
        await running
    return worker


async def test_a_chains_completion_starts_its_next_step_for_the_same_worker(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("a", data={"x": 1}), node("b", "a", data={"y": 2}),
                                   node("root", "b")))
    a = await take_one(engine)
    calls = count_calls(engine)
    before = time.time() * 1000
    [done] = await engine.complete_attempts([(a, "A")], owner="w1", handover=1, lease_ms=60_000)
    assert done.accepted and done.newly_ready == []
    b = done.handed
    assert b is not None and b.node == "b" and b.attempt == 1 and b.data == {"y": 2}
    assert b.token == handed_token(a.token) and b.queue == "work"
    assert b.inputs == ({"a": "A"}, {}, {})
    # One flow call and one queue call: no take, no start.
    assert calls == Counter({"flow/complete": 1, "queue/enqueue": 1})
    # The queue holds b under its lease (a's hold freed in the same call); nothing is queued.
    held = await active_members(engine)
    assert list(held) == [active_member(ref.uid, "b", b.token)]
    assert before + 60_000 - 5_000 < held[active_member(ref.uid, "b", b.token)] < \
        time.time() * 1000 + 60_000 + 5_000
    assert await engine.queue_depth(qid()) == (0, 1, 0)
    snap = await engine.snapshot(ref.id)
    assert {s: n for s, n in snap.counts.items() if n} == {
        "completed": 1, "active": 1, "waiting-children": 1}
    started = [e for e in await engine.events(ref.id) if e.get("type") == "started"]
    assert [(e["node"], e["owner"]) for e in started] == [("a", "w1"), ("b", "w1")]

    [done] = await engine.complete_attempts([(b, "B")], owner="w1", handover=1)
    root = done.handed
    assert root is not None and root.node == "root" and root.inputs == ({"b": "B"}, {}, {})
    [done] = await engine.complete_attempts([(root, "R")], owner="w1", handover=1)
    assert done.handed is None and done.phase is FlowPhase.SUCCEEDED
    assert await engine.queue_depth(qid()) == (0, 0, 0)
    assert await engine.children_values(ref.id, "root") == {"b": "B"}


async def test_a_node_made_ready_elsewhere_or_later_goes_through_its_queue(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(
        node("a"), node("other", "a", queue="other"),          # another queue
        node("b"), node("later", "b", delay_ms=60_000),        # a start delay
        node("c"), node("d"), node("both", "c", "d"),          # another child still runs
        node("root", "other", "later", "both", queue="other")))
    taken = {a.node: a for a in await engine.take(qid(), 10, owner="w1", with_inputs=True)}
    assert set(taken) == {"a", "b", "c", "d"}
    outcomes = [(await engine.complete_attempts([(taken[n], n)], owner="w1", handover=1))[0]
                for n in ("a", "b", "c")]
    assert [o.handed for o in outcomes] == [None, None, None]
    assert [o.newly_ready for o in outcomes] == [["other"], ["later"], []]
    assert await engine.queue_depth(qid("other")) == (1, 0, 0)
    assert await engine.queue_depth(qid()) == (0, 1, 1)  # d still held; later delayed
    [done] = await engine.complete_attempts([(taken["d"], "d")], owner="w1", handover=1)
    assert done.handed is not None and done.handed.node == "both"


async def test_nothing_is_handed_over_without_an_owner_a_budget_or_a_running_flow(
        engine: Engine) -> None:
    refs = [new_ref() for _ in range(4)]
    for ref in refs:
        await engine.submit(ref, build(node("a"), node("b", "a")))
    taken = {a.flow_uid: a for a in await engine.take(qid(), 10, owner="w1")}
    first, second, third, fourth = (taken[r.uid] for r in refs)
    await engine.suspend(refs[3].id)
    # Two completions with a budget of one: the first hands over, the second queues.
    outcomes = await engine.complete_attempts([(first, 1), (second, 1)], owner="w1", handover=1)
    assert [o.handed is not None for o in outcomes] == [True, False]
    [o] = await engine.complete_attempts([(third, 1)], handover=1)  # no owner
    assert o.handed is None and o.newly_ready == ["b"]
    [o] = await engine.complete_attempts([(fourth, 1)], owner="w1", handover=1)  # suspended
    assert o.handed is None and o.accepted
    assert (await engine.snapshot(refs[3].id)).counts["ready"] == 1


async def test_a_rate_limited_queue_never_hands_over(engine: Engine) -> None:
    await engine.configure_queue(qid(), QueueConfig(rate_max=100, rate_per_ms=60_000))
    ref = new_ref()
    await engine.submit(ref, build(node("a"), node("b", "a")))
    a = await take_one(engine)
    [o] = await engine.complete_attempts([(a, 1)], owner="w1", handover=1)
    assert o.handed is None and o.newly_ready == ["b"]
    b = await take_one(engine)  # through the queue, so the rate window counts it
    assert b.node == "b"
    assert [n for _, n in await engine.queue_takes(qid())] == [1, 1]


async def test_a_worker_that_dies_before_holding_what_it_was_handed_loses_nothing(
        engine: Engine) -> None:
    # The flow step hands b over; the worker dies before the queue step that frees a's lease
    # and holds b. Then b is active under a token no lease covers: when a's lease expires,
    # the stalled sweep must find b through it, put it back on the queue, and let it run
    # once more without spending an attempt; the dead worker's late completion is refused.
    ref = new_ref()
    await engine.submit(ref, build(node("a"), node("b", "a"), node("root", "b")))
    a = await take_one(engine, lease_ms=100)
    [step] = await engine.store.complete([(ref.id, [Completion("a", a.token, "A", queue="work")])],
                                         owners=["w1"])
    assert not isinstance(step, BaseException)
    handed = step.rows[0].handed
    assert handed is not None and handed.node == "b"
    assert (await engine.node_states(ref.id, ["b"]))[0].state == "active"
    await asyncio.sleep(0.3)
    stalled = await engine.release_stalled(qid())
    assert stalled == [(ref.id, "a")]  # the lease that expired was a's
    assert await engine.queue_depth(qid()) == (1, 0, 0)  # b back on the queue, not held
    late = await engine.complete(ref.id, "b", handed_token(a.token), "too late")
    assert not late.accepted
    b = await take_one(engine)
    assert b.node == "b" and b.attempt == 1 and b.inputs == ({"a": "A"}, {}, {})
    [o] = await engine.complete_attempts([(b, "B")], owner="w2", handover=1)
    assert o.handed is not None and o.handed.node == "root"
    [o] = await engine.complete_attempts([(o.handed, "R")], owner="w2", handover=1)
    assert o.phase is FlowPhase.SUCCEEDED
    assert await engine.queue_depth(qid()) == (0, 0, 0)
    assert await engine.children_values(ref.id, "root") == {"b": "B"}


async def test_a_worker_runs_a_chain_taking_only_its_first_step(engine: Engine) -> None:
    refs = [new_ref() for _ in range(3)]
    for ref in refs:
        await engine.submit(ref, build(*(node(f"s{i}", *([f"s{i - 1}"] if i else []))
                                         for i in range(10))))
    seen: Counter[tuple[str, str]] = Counter()

    async def handler(job: Any) -> int:
        seen[(job.flow.uid, job.name)] += 1
        return sum(job.children_values().values()) + 1

    worker = await run_until(Worker(engine, str(qid()), handler,
                                    WorkerOptions(concurrency=3, poll_max_s=0.01)), 30)
    assert worker.stats["taken"] == 3 and worker.stats["handed"] == 27
    assert set(seen.values()) == {1} and len(seen) == 30  # each node once
    for ref in refs:
        assert (await engine.snapshot(ref.id)).phase is FlowPhase.SUCCEEDED
        assert await engine.children_values(ref.id, "s9") == {"s8": 9}
    assert await engine.queue_depth(qid()) == (0, 0, 0)


async def test_chains_that_advance_in_waves_keep_handing_over(engine: Engine) -> None:
    # A hundred 4-step chains on a worker of concurrency 20 advance in waves: a completion
    # batch is often the last steps of many chains, which make nothing ready, while other
    # chains wait on the queue for a slot. The worker judges
    # whether to keep finished nodes' slots for handing over by the share of completions
    # that made something ready over recent batches, not within one, so such a batch does
    # not stop the next wave from being handed over.
    refs = [new_ref() for _ in range(100)]
    for ref in refs:
        await engine.submit(ref, build(*(node(f"s{i}", *([f"s{i - 1}"] if i else []))
                                         for i in range(4))))

    async def handler(job: Any) -> int:
        await asyncio.sleep(0.001)
        return 1

    worker = await run_until(Worker(engine, str(qid()), handler,
                                    WorkerOptions(concurrency=20, poll_max_s=0.01)), 400)
    assert worker.stats["taken"] == 100 and worker.stats["handed"] == 300


async def test_a_worker_without_handover_takes_every_step(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("a"), node("b", "a"), node("c", "b")))

    async def handler(job: Any) -> int:
        return 1

    worker = await run_until(Worker(engine, str(qid()), handler, WorkerOptions(
        concurrency=1, poll_max_s=0.01, handover=False)), 3)
    assert worker.stats["taken"] == 3 and worker.stats["handed"] == 0
    assert (await engine.snapshot(ref.id)).phase is FlowPhase.SUCCEEDED


async def test_what_a_failed_completion_batch_handed_over_goes_back_to_its_queue(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # One flow's call of the batch fails (its server went away): the caller gets the error
    # and sends the whole batch again, so it never runs what the other flow's completion
    # handed over. That node goes back to the queue at once, without spending an attempt.
    refs = [new_ref() for _ in range(2)]
    for ref in refs:
        await engine.submit(ref, build(node("a"), node("b", "a")))
    taken = {a.flow_uid: a for a in await engine.take(qid(), 10, owner="w1")}
    real = engine.store.complete

    async def second_call_fails(calls: Any, **kw: Any) -> list[Any]:
        return [*(await real(calls[:1], **kw)), ConnectionError("server went away")]

    monkeypatch.setattr(engine.store, "complete", second_call_fails)
    with pytest.raises(ConnectionError):
        await engine.complete_attempts([(taken[r.uid], 1) for r in refs], owner="w1",
                                       handover=2)
    monkeypatch.undo()
    assert await engine.queue_depth(qid()) == (1, 1, 0)  # b of the first flow; a of the other
    b = await take_one(engine)
    assert (b.flow_uid, b.node, b.attempt) == (refs[0].uid, "b", 1)
