"""Attempts, backoff, onFailure policies, stalls and retry, on Redis and on a cluster."""

from __future__ import annotations

import asyncio

import pytest

from kflow.engine import Attempt, Engine
from tests.integration.engine_kit import (
    build,
    delayed_member,
    new_ref,
    node,
    qid,
    run_flow,
    take_all,
    take_map,
    take_node,
)


async def _wait_ready(engine: Engine, name: str, queue: str = "work") -> Attempt:
    """Wait (on the store's clock, via promote_due) until a delayed node is handed out."""
    for _ in range(500):
        await engine.promote_due(qid(queue))
        for attempt in await take_all(engine, queue):
            if attempt.node == name:
                return attempt
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never became ready")


async def test_fail_parent_propagates_up_with_the_cause(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(
        node("root", "left", "right", "sibling"),
        node("left", "x"), node("right", "x"),  # diamond over x
        node("x"), node("sibling", priority=9),
    ))
    held = await take_map(engine)
    sibling, x = held["sibling"], held["x"]  # sibling is still running when the flow fails
    outcome = await engine.fail(ref.id, "x", x.token, "card declined")
    assert outcome.accepted and outcome.action == "failed" and outcome.phase == "Failed"
    infos = await engine.node_infos(ref.id)
    assert {n: i.state for n, i in infos.items()} == {
        "root": "failed", "left": "failed", "right": "failed", "x": "failed", "sibling": "active"}
    assert infos["left"].error == 'child "x" failed: card declined'
    assert infos["right"].error == 'child "x" failed: card declined'
    assert 'root cause: node "x": card declined' in (infos["root"].error or "")
    snap = await engine.snapshot(ref.id)
    assert [(f.node, f.error, f.attempt) for f in snap.failures] == [("x", "card declined", 1)]
    assert snap.finished_at_ms is not None
    # No new dispatch, but the attempt still running is recorded when it finishes.
    assert (await engine.complete(ref.id, "sibling", sibling.token, 5)).accepted
    assert (await engine.node_infos(ref.id))["sibling"].result == 5
    assert (await engine.snapshot(ref.id)).phase == "Failed"


async def test_fail_parent_through_a_deep_chain_is_iterative(engine: Engine) -> None:
    depth = 3000
    ref = new_ref()
    await engine.submit(ref, build(*(node(f"n{i}", *([f"n{i + 1}"] if i + 1 < depth else []))
                                     for i in range(depth))))
    leaf = await take_node(engine, f"n{depth - 1}")
    assert (await engine.fail(ref.id, leaf.node, leaf.token, "deep")).phase == "Failed"
    snap = await engine.snapshot(ref.id)
    assert snap.counts == {"failed": depth} and snap.done == depth


async def test_ignore_lets_the_parent_run_and_see_the_failure(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("report", "optional", "needed"),
                                   node("optional", on_failure="ignore"), node("needed")))
    held = await take_map(engine)
    opt, need = held["optional"], held["needed"]
    await engine.fail(ref.id, "optional", opt.token, "source offline")
    assert (await engine.node_infos(ref.id))["report"].state == "waiting-children"
    assert (await engine.complete(ref.id, "needed", need.token, 7)).newly_ready == ["report"]
    assert await engine.children_values(ref.id, "report") == {"needed": 7}
    assert await engine.ignored_failures(ref.id, "report") == {"optional": "source offline"}
    assert (await engine.node_infos(ref.id))["optional"].state == "ignored"
    report = await take_node(engine, "report")
    assert (await engine.complete(ref.id, "report", report.token, "ok")).phase == "Succeeded"


async def test_remove_drops_the_dependency(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("report", "gone", "needed"),
                                   node("gone", on_failure="remove"), node("needed")))
    held = await take_map(engine)
    gone, need = held["gone"], held["needed"]
    await engine.fail(ref.id, "gone", gone.token, "nope")
    assert (await engine.complete(ref.id, "needed", need.token, 1)).newly_ready == ["report"]
    assert await engine.children_values(ref.id, "report") == {"needed": 1}
    assert await engine.ignored_failures(ref.id, "report") == {}
    assert (await engine.node_infos(ref.id))["gone"].state == "removed"
    assert (await engine.snapshot(ref.id)).counts["removed"] == 1


async def test_continue_parent_starts_the_parent_at_once(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("parent", "flaky", "slow"),
                                   node("flaky", on_failure="continueParent"), node("slow")))
    held = await take_map(engine)
    flaky, slow = held["flaky"], held["slow"]
    await engine.fail(ref.id, "flaky", flaky.token, "bad")
    parent = await take_node(engine, "parent")  # slow is still running
    late = await engine.complete(ref.id, "slow", slow.token, "late")
    assert late.accepted and late.newly_ready == []  # just recorded: the parent already runs
    assert await engine.queue_depth(qid()) == (0, 1, 0)
    assert (await engine.complete(ref.id, "parent", parent.token, 1)).phase == "Succeeded"
    assert (await engine.node_infos(ref.id))["flaky"].state == "failed"


async def test_exponential_backoff_capped_by_max_delay(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("x", attempts=4, backoff_type="exponential",
                                        backoff_delay_ms=40, backoff_max_delay_ms=100)))
    delayed_key = engine.store.queue(qid()).delayed
    attempt = await take_node(engine, "x")
    dues = []
    for expected_attempt in (1, 2, 3):
        assert attempt.attempt == expected_attempt
        out = await engine.fail(ref.id, "x", attempt.token, f"try {expected_attempt}")
        assert out.action == "retry" and out.retry_at_ms is not None
        dues.append(out.retry_at_ms)
        assert await engine.store.redis.zscore(delayed_key, delayed_member(ref.uid, "x")) \
            == out.retry_at_ms
        assert (await engine.node_infos(ref.id))["x"].state == "delayed"
        attempt = await _wait_ready(engine, "x")
    retries = [e for e in await engine.events(ref.id) if e["type"] == "retry"]
    assert [int(e["due"]) for e in retries] == dues
    assert [int(e["due"]) - int(e["at"]) for e in retries] == [40, 80, 100]
    final = await engine.fail(ref.id, "x", attempt.token, "try 4")
    assert final.action == "failed" and final.phase == "Failed"
    assert (await engine.node_infos(ref.id))["x"].attempt == 4


async def test_jitter_randomises_a_share_of_the_delay(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(*(node(f"x{i}", attempts=2, backoff_delay_ms=10_000,
                                          backoff_jitter=0.5) for i in range(8))))
    delays = []
    for attempt in await take_all(engine):
        await engine.fail(ref.id, attempt.node, attempt.token, "boom")
    for e in await engine.events(ref.id):
        if e["type"] == "retry":
            delays.append(int(e["due"]) - int(e["at"]))
    assert len(delays) == 8
    assert all(5_000 <= d <= 10_000 for d in delays)
    assert len(set(delays)) > 1  # drawn per failure, not one fixed value


async def test_infrastructure_failures_do_not_spend_attempts(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("x", attempts=1)))
    for _ in range(5):
        attempt = await take_node(engine, "x")
        assert attempt.attempt == 1
        out = await engine.fail(ref.id, "x", attempt.token, "pod evicted", infrastructure=True)
        assert out.action == "requeued" and out.phase == "Running"
    attempt = await take_node(engine, "x")
    out = await engine.fail(ref.id, "x", attempt.token, "node lost", infrastructure=True)
    assert out.action == "failed" and out.phase == "Failed"  # the bound is reached


async def test_retry_failed_reruns_the_failed_branch(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "mid"), node("mid", "bad", "good"),
                                   node("bad"), node("good")))
    held = await take_map(engine)
    good, bad = held["good"], held["bad"]
    await engine.complete(ref.id, "good", good.token, "g")
    await engine.fail(ref.id, "bad", bad.token, "transient")
    assert (await engine.snapshot(ref.id)).phase == "Failed"
    assert await engine.retry_failed(ref.id) == 1
    infos = await engine.node_infos(ref.id)
    assert {n: i.state for n, i in infos.items()} == {
        "top": "waiting-children", "mid": "waiting-children", "bad": "ready", "good": "completed"}
    assert infos["bad"].attempt == 0 and infos["bad"].error is None
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Running" and snap.failures == [] and snap.finished_at_ms is None
    run = await run_flow(engine, ref.id, {"work"}, {"mid": lambda a, v: v})
    assert run.runs == {"bad": 1, "mid": 1, "top": 1}
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    assert (await engine.node_infos(ref.id))["mid"].result == {"bad": "bad", "good": "g"}


async def test_release_stalled_requeues_then_fails_as_stalled(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("x", attempts=1)))
    first = (await engine.take(qid(), 1, owner="w1", lease_ms=1))[0]
    await asyncio.sleep(0.02)
    assert await engine.release_stalled(qid()) == [(ref.id, "x")]
    assert (await engine.node_infos(ref.id))["x"].state == "ready"
    second = (await engine.take(qid(), 1, owner="w2", lease_ms=1))[0]
    assert second.attempt == 1  # the stall did not spend the attempt
    assert not (await engine.complete(ref.id, "x", first.token, "zombie")).accepted
    await asyncio.sleep(0.02)
    assert await engine.release_stalled(qid()) == [(ref.id, "x")]
    infos = await engine.node_infos(ref.id)
    assert infos["x"].state == "failed" and "stalled" in (infos["x"].error or "")
    assert (await engine.snapshot(ref.id)).phase == "Failed"
    assert await engine.queue_depth(qid()) == (0, 0, 0)


async def test_renewed_lease_is_not_stalled(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("x")))
    attempt = (await engine.take(qid(), 1, owner="w", lease_ms=1))[0]
    await engine.renew([attempt], 60_000)
    await asyncio.sleep(0.02)
    assert await engine.release_stalled(qid()) == []
    assert (await engine.complete(ref.id, "x", attempt.token, 1)).accepted


async def test_a_failing_root_fails_the_flow_whatever_its_policy(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("lonely", on_failure="ignore"), node("other")))
    lonely = await take_node(engine, "lonely")
    assert (await engine.fail(ref.id, "lonely", lonely.token, "x")).phase == "Failed"
    assert await take_all(engine) == []


async def test_a_failed_flow_takes_its_waiting_nodes_off_the_queues(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("sum", *(f"n{i}" for i in range(20))),
                                   node("n0", priority=0),
                                   *(node(f"n{i}", priority=3, delay_ms=(60_000 if i % 2 else 0))
                                     for i in range(1, 20))))
    assert await engine.queue_depth(qid()) == (10, 0, 10)
    n0 = (await engine.take(qid(), 1, owner="t"))[0]
    await engine.fail(ref.id, "n0", n0.token, "boom")
    assert await engine.queue_depth(qid()) == (0, 0, 0)
    snap = await engine.snapshot(ref.id)  # the other 19 never started: cancelled
    assert snap.counts == {"failed": 2, "cancelled": 19}
    # Retry puts everything back: n0 and the 19 cancelled children (9 with their start delay).
    assert await engine.retry_failed(ref.id) == 20
    assert await engine.queue_depth(qid()) == (10, 0, 10)


async def test_fixed_backoff_waits_the_same_delay_before_every_retry(engine: Engine) -> None:
    ref = new_ref()
    # maxDelay above any doubling: a fixed backoff that grew would show 40, 80, 160.
    await engine.submit(ref, build(node("x", attempts=4, backoff_type="fixed",
                                        backoff_delay_ms=40, backoff_max_delay_ms=10_000)))
    attempt = await take_node(engine, "x")
    for expected_attempt in (1, 2, 3):
        assert attempt.attempt == expected_attempt
        out = await engine.fail(ref.id, "x", attempt.token, f"try {expected_attempt}")
        assert out.action == "retry"
        attempt = await _wait_ready(engine, "x")
    retries = [e for e in await engine.events(ref.id) if e["type"] == "retry"]
    assert [int(e["due"]) - int(e["at"]) for e in retries] == [40, 40, 40]


@pytest.mark.parametrize("policy", ["ignore", "remove"])
async def test_retry_reruns_a_root_that_failed_the_flow_under_ignore_or_remove(
        engine: Engine, policy: str) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("root", "child", on_failure=policy), node("child")))
    child = await take_node(engine, "child")
    await engine.complete(ref.id, "child", child.token, "c")
    root = await take_node(engine, "root")
    assert (await engine.fail(ref.id, "root", root.token, "boom")).phase == "Failed"
    assert (await engine.node_infos(ref.id))["root"].state == {"ignore": "ignored",
                                                                 "remove": "removed"}[policy]
    assert await engine.retry_failed(ref.id) == 1
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Running" and snap.counts == {"completed": 1, "ready": 1}
    again = await take_node(engine, "root")
    assert again.attempt == 1  # fresh attempts
    assert (await engine.complete(ref.id, "root", again.token, "r")).phase == "Succeeded"
    assert (await engine.node_infos(ref.id))["root"].result == "r"
