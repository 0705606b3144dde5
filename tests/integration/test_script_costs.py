"""What a node's start and completion cost inside Redis: the commands their scripts run.

Inside a script every command costs its own work plus the hop from Lua into Redis; on a
chain, where each flow has one node in flight, that hop is most of what a node costs Redis
(bench/RESULTS.md). These tests pin the commands a chain step runs, so that one more read on
the hot path shows up here before it shows up in the benchmark.
"""

from __future__ import annotations

import pytest

from kflow.engine import Engine
from kflow.store.codec import loads, text
from kflow.store.types import started_row
from tests.integration.engine_kit import build, new_ref, node, qid, take_all, take_map, take_node
from tests.integration.test_store_functions import command_calls, on_every_master

pytestmark = pytest.mark.asyncio


async def reset_stats(engine: Engine) -> None:
    await on_every_master(engine.store.redis, "CONFIG", "RESETSTAT")


def inner(calls: dict[str, int]) -> dict[str, int]:
    """The commands scripts ran, and the plain ones around them, without the calls themselves."""
    return {c: n for c, n in calls.items() if c not in ("fcall", "evalsha", "config|resetstat")}


async def test_a_chain_step_reads_the_fence_once_and_writes_the_counts_in_two_commands(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, build(node("a"), node("b", "a"), node("root", "b")))
    a = await take_node(engine, "a")

    await reset_stats(engine)
    assert (await engine.complete(ref.id, "a", a.token, 1)).accepted
    calls = inner(await command_calls(engine.store.redis))
    # Four counts change (a active -> completed, b waiting-children -> ready): one HMGET and
    # one HSET, not four HINCRBY. The one HINCRBY left is b's pending dependencies.
    assert calls.get("hincrby") == 1, calls
    # a's token (the fence: a token is held only while its node is active), its record of
    # added children and its parents (read for the batch, of one); a's spec (its queue: this
    # caller did not say) and its times; b's state and b's spec.
    assert calls.get("hget") == 7, calls
    assert calls.get("hmget") == 2, calls  # the flow's meta and its counts
    snap = await engine.snapshot(ref.id)
    assert {s: n for s, n in snap.counts.items() if n} == {
        "completed": 1, "ready": 1, "waiting-children": 1}, snap.counts

    await reset_stats(engine)
    [b] = await engine.take(qid(), 10, owner="test", with_inputs=True)
    calls = inner(await command_calls(engine.store.redis))
    assert b.inputs == ({"a": 1}, {}, {})
    # b's children are read in one HGET and measured in Lua, not HSTRLEN first.
    assert "hstrlen" not in calls, calls
    # A first attempt finds nothing an earlier one left: the start deletes nothing.
    assert "hdel" not in calls, calls
    # b's state, spec, data and children list (read for the batch, of one: HGET, not HMGET);
    # then a's state and a's result.
    assert calls.get("hget") == 6, calls
    assert sum(calls.values()) <= 30, calls


async def test_a_small_flow_is_added_with_its_record_and_counts_written_once(
        engine: Engine) -> None:
    await reset_stats(engine)
    ref = new_ref()
    assert await engine.submit(ref, build(node("a"), node("b", "a"), node("root", "b")))
    calls = inner(await command_calls(engine.store.redis))
    # The phase (is the flow new?) and the clock; then the meta record, created Running, the
    # specs, parents, children, pending counts, states, ready set and counts: one write each.
    # Nothing is read back and no count goes up one HINCRBY at a time.
    assert calls.get("hget") == 1, calls
    assert "hmget" not in calls and "hincrby" not in calls, calls
    assert calls.get("hset") == 7, calls
    snap = await engine.snapshot(ref.id)
    assert snap.phase.value == "Running", snap
    assert {s: n for s, n in snap.counts.items() if n} == {"ready": 1, "waiting-children": 2}


async def test_a_stale_token_is_refused_after_each_way_out_of_active(engine: Engine) -> None:
    """The fence reads only the token: every way a node leaves active must drop it."""
    ref = new_ref()
    flow = build(node("done"), node("failed", attempts=2), node("root", "done", "failed"))
    assert await engine.submit(ref, flow)
    taken = await take_map(engine)
    done, failed = taken["done"], taken["failed"]
    assert (await engine.complete(ref.id, "done", done.token, 1)).accepted
    retry = await engine.fail(ref.id, "failed", failed.token, "boom")
    assert retry.accepted and retry.action == "retry"
    # The old tokens no longer hold their nodes: completed, and back to ready for a retry.
    assert not (await engine.complete(ref.id, "done", done.token, 2)).accepted
    assert not (await engine.complete(ref.id, "failed", failed.token, 2)).accepted
    again = await take_node(engine, "failed")
    assert again.attempt == 2
    assert (await engine.complete(ref.id, "failed", again.token, 3)).accepted
    assert not (await engine.complete(ref.id, "failed", again.token, 4)).accepted
    [root] = await engine.take(qid(), 10, owner="test", with_inputs=True)
    assert root.inputs == ({"done": 1, "failed": 3}, {}, {})


async def test_what_an_attempt_left_never_reaches_the_next_attempt_of_the_same_number(
        engine: Engine) -> None:
    """The start clears a stored result and progress only when the attempt number grows:
    every step after which the next attempt has the same number must clear them itself."""
    ref = new_ref()
    assert await engine.submit(ref, build(
        node("handed", attempts=1), node("added", attempts=1), node("lost", attempts=1),
        node("root", "handed", "added", "lost")))
    first = await take_map(engine)
    for name, attempt in first.items():
        assert attempt.attempt == 1
        await engine.update_progress(ref.id, name, attempt.token, {"left": name})
    assert await engine.store_result(ref.id, "handed", first["handed"].token, "stale")

    # handed: given back (a worker shutting down), requeued with its attempt unspent.
    assert await engine.release([first["handed"]]) == 1
    handed = (await take_map(engine))["handed"]
    assert handed.attempt == 1
    assert await engine.store.node_progress(ref.id, ["handed"]) == [None]
    assert await engine.store.node_results(ref.id, ["handed"]) == [None]
    # Its old stored value must not complete the new attempt when that one is lost.
    outcome = await engine.fail(ref.id, "handed", handed.token, "pod lost", infrastructure=True)
    assert outcome.action == "requeued", outcome

    # added: adds a child to itself, waits for it, then runs again as attempt 1.
    await engine.add_children(ref.id, "added", first["added"].token,
                              [{"name": "child", "queue": "work"}])
    assert (await engine.complete(ref.id, "added", first["added"].token, "dropped")).accepted
    child = (await take_map(engine))["child"]
    assert (await engine.complete(ref.id, "child", child.token, 1)).accepted
    added = (await take_map(engine))["added"]
    assert added.attempt == 1
    assert await engine.store.node_progress(ref.id, ["added"]) == [None]

    # lost: fails, the flow fails, and a flow retry runs it again from attempt 1.
    assert (await engine.fail(ref.id, "lost", first["lost"].token, "boom")).action == "failed"
    assert await engine.retry_failed(ref.id) >= 1
    lost = (await take_map(engine))["lost"]
    assert lost.attempt == 1
    assert await engine.store.node_progress(ref.id, ["lost"]) == [None]


async def test_a_batch_of_completions_counts_down_their_parent_once(engine: Engine) -> None:
    ref = new_ref()
    leaves = [node(f"leaf-{i}") for i in range(12)]
    assert await engine.submit(ref, build(*leaves, node("root", *(n.name for n in leaves))))
    taken = await take_map(engine)
    first = [(taken[f"leaf-{i}"], i) for i in range(10)]

    await reset_stats(engine)
    assert all(o.accepted for o in await engine.complete_attempts(first))
    calls = inner(await command_calls(engine.store.redis))
    # Tokens, records of added children, parents and times: one HMGET each for the ten;
    # then root's state once.
    assert calls.get("hget") == 1, calls
    # Per leaf its state; the ten values in one HSET and the ten times in another, the ten
    # tokens dropped in one HDEL.
    assert calls.get("hset") == 10 + 2, calls
    assert calls.get("hdel") == 1, calls
    # The two counts that changed (active, completed), and root's pending count once.
    assert calls.get("hincrby") == 3, calls
    assert (await engine.node_infos(ref.id))["root"].state == "waiting-children"

    last = [(taken[f"leaf-{i}"], i) for i in (10, 11)]
    assert all(o.accepted for o in await engine.complete_attempts(last))
    [root] = await engine.take(qid(), 10, owner="test", with_inputs=True)
    assert root.node == "root"
    assert root.inputs is not None and root.inputs[0] == {f"leaf-{i}": i for i in range(12)}


async def test_a_batch_completing_a_node_and_a_child_it_added_keeps_the_node_waiting(
        engine: Engine) -> None:
    """The child completed while the node was still running: that counts for nothing once
    the node waits for its children (its count leaves out those already done)."""
    ref = new_ref()
    assert await engine.submit(ref, build(node("split"), node("top", "split")))
    split = (await take_map(engine))["split"]
    await engine.add_children(ref.id, "split", split.token,
                              [{"name": "one", "queue": "work"}, {"name": "two", "queue": "work"}])
    children = await take_map(engine)
    outcomes = await engine.complete_attempts([(children["one"], 1), (split, "dropped")])
    assert [o.accepted for o in outcomes] == [True, True]
    infos = await engine.node_infos(ref.id)
    assert infos["split"].state == "waiting-children", infos["split"]
    assert await take_map(engine) == {}
    assert (await engine.complete_attempts([(children["two"], 2)]))[0].accepted
    again = (await engine.take(qid(), 10, owner="test", with_inputs=True))
    assert [a.node for a in again] == ["split"]
    assert again[0].inputs is not None and again[0].inputs[0] == {"one": 1, "two": 2}


async def test_a_batch_writes_its_starts_and_completions_as_one_event_entry_each(
        engine: Engine) -> None:
    ref = new_ref()
    leaves = [node(f"leaf-{i}") for i in range(5)]
    assert await engine.submit(ref, build(*leaves, node("root", *(n.name for n in leaves))))
    stream = engine.store.flow(ref.id).events
    redis = engine.store.redis
    before = await redis.xlen(stream)
    taken = await take_all(engine)
    assert await redis.xlen(stream) == before + 1
    done = [(a, int(a.node.split("-")[1])) for a in sorted(taken, key=lambda a: a.node)]
    assert all(o.accepted for o in await engine.complete_attempts(done))
    assert await redis.xlen(stream) == before + 2

    events = [e for e in await engine.events(ref.id) if e["type"] in ("started", "completed")]
    started, completed = events[:5], events[5:]
    assert {e["node"] for e in started} == {f"leaf-{i}" for i in range(5)}
    assert all(e["attempt"] == "1" and e["owner"] == "test" for e in started), started
    assert len({e["id"] for e in started}) == 1
    assert [e["node"] for e in completed] == [f"leaf-{i}" for i in range(5)]
    assert len({e["id"] for e in completed}) == 1 and completed[0]["id"] > started[0]["id"]
    # A reader following the stream sees the same events.
    followed = await engine.follow_events(ref.id, "0-0", block_ms=1, count=100)
    assert [e for e in followed if e["type"] in ("started", "completed")] == events

    # One node started alone is a plain entry, as every event outside a batch.
    [root] = await take_all(engine)
    assert root.node == "root"
    [(_, fields)] = await redis.xrevrange(stream, count=1)
    assert {text(k): text(v) for k, v in fields.items()} == {
        "type": "started", "node": "root", "attempt": "1", "owner": "test"}


async def test_a_batch_start_reads_and_writes_each_hash_once(engine: Engine) -> None:
    ref = new_ref()
    leaves = [node(f"leaf-{i}", data={"i": i}) for i in range(10)]
    assert await engine.submit(ref, build(*leaves, node("root", *(n.name for n in leaves))))

    await reset_stats(engine)
    taken = await engine.take(qid(), 100, owner="test", with_inputs=True)
    calls = inner(await command_calls(engine.store.redis))
    assert sorted(a.node for a in taken) == [f"leaf-{i}" for i in range(10)]
    assert all(a.data == {"i": int(a.node.split("-")[1])} and a.attempt == 1 for a in taken)
    assert all(a.inputs == ({}, {}, {}) for a in taken)
    # States, data, specs, children lists, attempt counts and times: one HMGET each for the
    # ten, their waits one ZMSCORE; tokens, states, attempt counts and times one HSET each.
    # Nothing per node: the two HINCRBY are the counts (ready, active).
    assert "hget" not in calls, calls
    assert calls.get("hmget") == 6 + 2, calls  # and the flow's meta, the queue's config
    assert calls.get("zmscore") == 1 and calls.get("hset") == 4, calls
    assert calls.get("hincrby") == 2, calls
    assert not {"zscore", "hsetnx"} & calls.keys(), calls
    assert calls.get("zadd") == 1, calls  # the take holds the ten in one ZADD
    snap = await engine.snapshot(ref.id)
    assert {s: n for s, n in snap.counts.items() if n} == {"active": 10, "waiting-children": 1}
    assert all(i.state == "active" for n, i in (await engine.node_infos(ref.id)).items()
               if n != "root")


async def test_a_node_named_twice_in_one_start_starts_once(engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, build(node("a"), node("root", "a")))
    [step] = await engine.store.start_attempts_many(
        "test", [(ref.id, [("a", "token-1"), ("a", "token-2")])])
    assert not isinstance(step, BaseException)
    assert [(r.node, r.status, r.attempt) for r in step.rows] == [
        ("a", "ok", 1), ("a", "gone", 0)]
    assert await engine.store.active_tokens(ref.id) == {"a": "token-1"}
    assert (await engine.snapshot(ref.id)).counts.get("active") == 1


async def test_a_node_named_twice_in_one_completion_completes_once(engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, build(node("a"), node("b"), node("root", "a", "b")))
    taken = await take_map(engine)
    a, b = taken["a"], taken["b"]
    outcomes = await engine.complete_attempts([(a, 1), (a, 2), (b, 3)])
    assert [o.accepted for o in outcomes] == [True, False, True]
    assert await engine.store.node_results(ref.id, ["a", "b"]) == [1, 3]
    assert await engine.store.active_tokens(ref.id) == {}
    [root] = await engine.take(qid(), 10, owner="test", with_inputs=True)
    assert root.inputs is not None and root.inputs[0] == {"a": 1, "b": 3}


async def test_a_start_reply_spares_cjson_its_numbers_and_a_leaf_its_empty_inputs(
        engine: Engine) -> None:
    """cjson formats each number with sprintf (~0.3 µs) and encodes each table: a start's
    rows carry small integers as text and a leaf's inputs as "", and still decode as before."""
    ref = new_ref()
    assert await engine.submit(ref, build(node("leaf-0"), node("leaf-1"),
                                          node("root", "leaf-0", "leaf-1")))
    store = engine.store
    raw = await store.scripts.run("flow/start", store.flow(ref.id).all,
                                  ["test", "1", "leaf-0", "token-0", "leaf-1", "token-1"])
    rows = loads(raw)[3]
    assert [(r[0], r[1], r[2], r[4], r[6], r[7]) for r in rows] == [
        ("leaf-0", "ok", "1", "-1", "0", ""), ("leaf-1", "ok", "1", "-1", "0", "")], rows
    assert all(isinstance(r[5], str) and int(r[5]) >= 0 for r in rows), rows
    row = started_row(rows[0])
    assert (row.attempt, row.timeout_ms, row.rank) == (1, None, 0)
    assert row.inputs is not None and row.inputs.values == [] and not row.inputs.paged


async def test_a_batch_start_keeps_the_token_hash_a_hash_table_and_out_of_every_listing(
        engine: Engine) -> None:
    """With fewer than 128 running attempts Redis would keep the token hash as a listpack and
    scan it field by field on every read and write; the anchor a batch start writes keeps it a
    hash table, and neither the store's listing nor a cancel sees it."""
    ref = new_ref()
    assert await engine.submit(ref, build(node("a"), node("b"), node("root", "a", "b")))
    taken = await take_map(engine)
    assert sorted(taken) == ["a", "b"]
    key = engine.store.flow(ref.id).token
    assert text(await engine.store.redis.object("encoding", key)) == "hashtable"
    running = {"a": taken["a"].token, "b": taken["b"].token}
    assert await engine.store.active_tokens(ref.id) == running
    assert dict(await engine.cancel(ref.id)) == running


async def test_a_chain_step_handed_over_skips_the_ready_set_and_the_start(
        engine: Engine) -> None:
    """A completion that hands over (test_engine_handover) starts the next step in its own
    call: nothing goes on or off a ready set, and the flow's record and clock are read once
    for both the completion and the start."""
    ref = new_ref()
    assert await engine.submit(ref, build(node("a"), node("b", "a"), node("root", "b")))
    [a] = await engine.take(qid(), 1, owner="w", with_inputs=True)

    await reset_stats(engine)
    [done] = await engine.complete_attempts([(a, 1)], owner="w", handover=1)
    calls = inner(await command_calls(engine.store.redis))
    assert done.handed is not None and done.handed.inputs == ({"a": 1}, {}, {})
    # a's completion and b's start, each fenced and recorded; the queue frees a's hold and
    # holds b in one ZREM and one ZADD.
    assert calls.get("zadd") == 1 and calls.get("zrem") == 1, calls
    assert "zscore" not in calls and "zpopmin" not in calls, calls
    assert calls.get("time") == 2, calls  # the flow call's clock and the queue call's
    assert calls.get("hmget") == 1, calls  # the flow's meta, once
    assert calls.get("xadd") == 2, calls  # a completed, b started
    assert sum(calls.values()) <= 30, calls  # 29 today
