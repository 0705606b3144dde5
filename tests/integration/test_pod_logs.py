"""Node logs that outlive pods, at the store: each attempt's log tail is kept with the flow,
read back per attempt, bounded per flow, and expires and is deleted with the flow's keys."""

from __future__ import annotations

import asyncio

from kflow.engine import Engine
from tests.integration.engine_kit import build, new_ref, node, take_map

BUDGET = 1000  # bytes of log text per flow in these tests


async def test_a_retried_node_keeps_each_attempts_log_and_a_replay_replaces_it(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "x"), node("x", attempts=3), node("other")))
    x = (await take_map(engine))["x"]
    await engine.fail(ref.id, "x", x.token, "boom")
    assert await engine.keep_pod_log(ref.id, "x", 1, "first\nboom\n", failed=True,
                                     flow_budget=BUDGET)
    x = (await take_map(engine))["x"]
    await engine.complete(ref.id, "x", x.token, 1)
    assert await engine.keep_pod_log(ref.id, "x", 2, "second ok\n", failed=False,
                                     flow_budget=BUDGET)
    # The same Job seen again (a watch replay, an operator restart): replaced, not added.
    assert await engine.keep_pod_log(ref.id, "x", 2, "second ok, again\n", failed=False,
                                     flow_budget=BUDGET)

    assert await engine.attempt_logs(ref.id, "x") == [(1, "first\nboom\n"),
                                                      (2, "second ok, again\n")]
    assert await engine.attempt_logs(ref.id, "other") == []
    assert await engine.attempt_logs(ref.id, "no-such-node") == []
    assert await engine.pod_log_usage(ref.id) == (len("first\nboom\nsecond ok, again\n"), 0)


async def test_the_flows_budget_keeps_failures_after_successes_stop_being_kept(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(*(node(f"n{i}") for i in range(6))))

    async def keep(name: str, size: int, failed: bool) -> bool:
        return await engine.keep_pod_log(ref.id, name, 1, "é" * (size // 2), failed=failed,
                                         flow_budget=BUDGET)

    assert await keep("n0", 400, failed=False)  # 400 of the 500 successes may use
    assert not await keep("n1", 200, failed=False)  # 600 > 500
    assert await keep("n2", 100, failed=False)  # 500: still within half
    assert await keep("n3", 480, failed=True)  # 980: failures may use all of it
    assert not await keep("n4", 40, failed=True)  # 1020 > 1000
    assert await keep("n5", 20, failed=True)  # exactly 1000
    # Lengths are bytes (é is two), as Redis counts them.
    assert await engine.pod_log_usage(ref.id) == (1000, 2)
    assert [n for n in ("n0", "n1", "n2", "n3", "n4", "n5")
            if await engine.attempt_logs(ref.id, n)] == ["n0", "n2", "n3", "n5"]
    # A replaced text gives its bytes back first.
    assert await engine.keep_pod_log(ref.id, "n0", 1, "short", failed=True, flow_budget=BUDGET)
    assert await engine.pod_log_usage(ref.id) == (605, 2)


async def test_a_log_of_a_flow_not_in_redis_leaves_no_key(engine: Engine) -> None:
    ref = new_ref()
    assert not await engine.keep_pod_log(ref.id, "x", 1, "late", failed=True, flow_budget=BUDGET)
    assert not await engine.store.redis.exists(engine.store.flow(ref.id).podlogs)
    assert await engine.attempt_logs(ref.id, "x") == []
    assert await engine.pod_log_usage(ref.id) == (0, 0)


async def test_pod_logs_expire_with_the_flow_kept_before_or_after_it_ended(
        engine: Engine) -> None:
    before, after = new_ref(), new_ref()
    for ref in (before, after):
        await engine.submit(ref, build(node("x", queue=ref.uid)), ttl_seconds_after_finished=100)
    key_before, key_after = (engine.store.flow(r.id).podlogs for r in (before, after))

    x = (await take_map(engine, before.uid))["x"]
    await engine.keep_pod_log(before.id, "x", 1, "log", failed=False, flow_budget=BUDGET)
    assert await engine.store.redis.pttl(key_before) == -1  # running: no expiry yet
    await engine.complete(before.id, "x", x.token, 1)  # the flow ends: every key expires
    assert 0 < await engine.store.redis.pttl(key_before) <= 100_000

    x = (await take_map(engine, after.uid))["x"]
    await engine.complete(after.id, "x", x.token, 1)
    await engine.keep_pod_log(after.id, "x", 1, "log", failed=False, flow_budget=BUDGET)
    assert 0 < await engine.store.redis.pttl(key_after) <= 100_000
    meta = await engine.store.meta(after.id)
    assert meta is not None and meta.expire_at_ms is not None
    expire_at = await engine.store.redis.pexpiretime(key_after)
    assert expire_at == meta.expire_at_ms


async def test_pod_logs_go_with_the_deleted_flow_and_expire_for_real(engine: Engine) -> None:
    gone, short = new_ref(), new_ref()
    await engine.submit(gone, build(node("x", queue="a")))
    await engine.keep_pod_log(gone.id, "x", 1, "log", failed=True, flow_budget=BUDGET)
    await engine.delete(gone.id)
    assert not await engine.store.redis.exists(engine.store.flow(gone.id).podlogs)
    assert await engine.attempt_logs(gone.id, "x") == []

    await engine.submit(short, build(node("x", queue="b")), ttl_seconds_after_finished=1)
    x = (await take_map(engine, "b"))["x"]
    await engine.keep_pod_log(short.id, "x", 1, "log", failed=False, flow_budget=BUDGET)
    await engine.complete(short.id, "x", x.token, 1)
    key = engine.store.flow(short.id).podlogs
    for _ in range(100):  # at most 10 s: the key goes 1 s after the flow ended
        if not await engine.store.redis.exists(key):
            break
        await asyncio.sleep(0.1)
    assert not await engine.store.redis.exists(key)
