"""The engine calls behind workers: batched completion and handing attempts back."""

from __future__ import annotations

from kflow.engine import Engine, QueueConfig
from tests.integration.engine_kit import build, new_ref, node, qid, take_map


async def test_complete_many_settles_each_item_and_unlocks_the_parent_once(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "a", "b", "c", queue="agg"),
                                   node("a"), node("b"), node("c")))
    got = await take_map(engine)
    outcomes = await engine.complete_many(ref.id, [
        ("a", got["a"].token, 1), ("b", "stale-token", 2), ("c", got["c"].token, 3)])
    assert [o.accepted for o in outcomes] == [True, False, True]
    assert (await engine.snapshot(ref.id)).counts == {
        "completed": 2, "active": 1, "waiting-children": 1}
    assert await engine.queue_depth(qid()) == (0, 1, 0)  # only b's lease is left
    outcomes = await engine.complete_many(ref.id, [("b", got["b"].token, 2),
                                                    ("a", got["a"].token, 9)])
    assert [o.accepted for o in outcomes] == [True, False]  # a twice: refused, value kept
    assert outcomes[0].newly_ready == ["top"]
    assert await engine.queue_depth(qid("agg")) == (1, 0, 0)
    top = (await take_map(engine, "agg"))["top"]
    assert await engine.children_values(ref.id, "top") == {"a": 1, "b": 2, "c": 3}
    [done] = await engine.complete_many(ref.id, [("top", top.token, 6)])
    assert done.accepted and done.phase == "Succeeded"
    assert await engine.queue_depth(qid()) == (0, 0, 0)


async def test_release_hands_back_without_spending_an_attempt_or_a_stall(engine: Engine) -> None:
    await engine.configure_queue(qid(), QueueConfig(max_stalled=0))
    ref = new_ref()
    await engine.submit(ref, build(node("top", "a", "b", queue="agg"), node("a"), node("b")))
    got = await take_map(engine)
    assert await engine.release([got["a"], got["b"]], "test") == 2
    assert await engine.release([got["a"]], "again") == 0  # token is stale now
    assert (await engine.snapshot(ref.id)).counts == {"ready": 2, "waiting-children": 1}
    assert await engine.queue_depth(qid()) == (2, 0, 0)
    again = await take_map(engine)
    assert {a.node: a.attempt for a in again.values()} == {"a": 1, "b": 1}
    # max_stalled=0 would fail a stalled node at once: a release is not a stall.
    assert not (await engine.complete(ref.id, "a", got["a"].token, 1)).accepted
    for name in ("a", "b"):
        assert (await engine.complete(ref.id, name, again[name].token, 1)).accepted
    released = [e for e in await engine.events(ref.id) if e["type"] == "released"]
    assert sorted(e["node"] for e in released) == ["a", "b"]


async def test_release_in_a_cancelled_flow_records_the_attempt_as_cancelled(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("a"), node("b")))
    got = await take_map(engine)
    await engine.cancel(ref.id)
    assert await engine.release(list(got.values())) == 2
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Cancelled" and snap.counts == {"cancelled": 2}
    assert await engine.queue_depth(qid()) == (0, 0, 0)


async def test_inputs_many_reads_values_and_ignored_failures_per_node(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "a", "b", queue="agg"), node("solo", queue="agg"),
                                   node("a"), node("b", on_failure="ignore")))
    got = await take_map(engine)
    await engine.complete(ref.id, "a", got["a"].token, {"x": [1]})
    await engine.fail(ref.id, "b", got["b"].token, "boom")
    assert await engine.inputs_many(ref.id, ["top", "solo", "a"]) == [
        ({"a": {"x": [1]}}, {"b": "boom"}, {}), ({}, {}, {}), ({}, {}, {})]
    assert await engine.children_values(ref.id, "top") == {"a": {"x": [1]}}


async def test_inputs_many_shows_an_ignored_child_and_not_a_removed_one(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "kept", "skipped", "dropped", queue="agg"),
                                   node("kept"), node("skipped", on_failure="ignore"),
                                   node("dropped", on_failure="remove")))
    got = await take_map(engine)
    await engine.complete(ref.id, "kept", got["kept"].token, 1)
    await engine.fail(ref.id, "skipped", got["skipped"].token, "source offline")
    await engine.fail(ref.id, "dropped", got["dropped"].token, "gone")
    # What a worker's handler sees (job.children_values / job.ignored_failures): a removed
    # dependency disappears, an ignored one is reported with its error.
    [(values, ignored, *more)] = await engine.inputs_many(ref.id, ["top"])
    assert values == {"kept": 1}
    assert ignored == {"skipped": "source offline"}
    assert all("dropped" not in part for part in more)
    assert await engine.ignored_failures(ref.id, "top") == {"skipped": "source offline"}
