"""When each node ran, on Redis's clock: its first attempt's start and the time it settled,
through retries within the node, a flow retry, and nodes that never started."""

from __future__ import annotations

import asyncio

from kflow.engine import Engine, NodeRow
from tests.integration.engine_kit import build, new_ref, node, qid, take_map


async def rows(engine: Engine, flow_id) -> dict[str, NodeRow]:  # type: ignore[no-untyped-def]
    page = await engine.node_page(flow_id, limit=100)
    return {r.name: r for r in page.rows}


async def test_a_node_keeps_its_first_start_across_attempts_and_settles_once(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "flaky", "quick"),
                                   node("flaky", attempts=2), node("quick")))
    held = await take_map(engine)
    first = held["flaky"]
    await asyncio.sleep(0.02)
    await engine.complete(ref.id, "quick", held["quick"].token, 1)
    before = await rows(engine, ref.id)
    assert before["top"].started_ms is None and before["top"].finished_ms is None
    assert before["flaky"].started_ms is not None and before["flaky"].finished_ms is None
    quick = before["quick"]
    assert quick.started_ms is not None and quick.finished_ms is not None
    assert quick.finished_ms - quick.started_ms >= 20  # it ran across the sleep

    assert (await engine.fail(ref.id, "flaky", first.token, "once")).action == "retry"
    await asyncio.sleep(0.02)
    await engine.promote_due(qid("work"))  # backoff 0: due at once
    second = (await take_map(engine))["flaky"]
    assert second.attempt == 2
    await engine.complete(ref.id, "flaky", second.token, 2)
    after = await rows(engine, ref.id)
    flaky = after["flaky"]
    # The start is attempt 1's, kept through the retry; the end is when attempt 2 completed.
    assert flaky.started_ms == before["flaky"].started_ms
    assert flaky.finished_ms is not None and flaky.finished_ms - flaky.started_ms >= 20
    assert after["quick"].finished_ms == quick.finished_ms  # settled once, never moved
    assert after["top"].started_ms is None  # ready, not started


async def test_a_flow_retry_starts_the_record_over_and_unstarted_nodes_have_none(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "mid"), node("mid", "bad", "slow"),
                                   node("bad"), node("slow")))
    held = await take_map(engine)
    await engine.fail(ref.id, "bad", held["bad"].token, "transient")
    failed = await rows(engine, ref.id)
    bad = failed["bad"]
    assert bad.started_ms is not None and bad.finished_ms is not None
    # The parents never started: cancelled or failed by propagation, with no times.
    assert (failed["mid"].started_ms, failed["top"].started_ms) == (None, None)
    await engine.complete(ref.id, "slow", held["slow"].token, "s")  # late result still timed
    assert (await rows(engine, ref.id))["slow"].finished_ms is not None

    await asyncio.sleep(0.02)
    assert await engine.retry_failed(ref.id) == 1
    retried = await rows(engine, ref.id)
    assert (retried["bad"].started_ms, retried["bad"].finished_ms) == (None, None)
    rerun = (await take_map(engine))["bad"]
    await engine.complete(ref.id, "bad", rerun.token, "b")
    again = (await rows(engine, ref.id))["bad"]
    assert again.started_ms is not None and again.started_ms >= bad.finished_ms
    assert again.finished_ms is not None and again.finished_ms >= again.started_ms


async def test_a_batch_keeps_the_times_a_start_and_a_completion_at_a_time_keep(
        engine: Engine) -> None:
    """A batch reads its nodes' times first and writes them once at its end (flow/_lib,
    load_times): a retried node in a batch keeps its first start, a new one gets its own."""
    ref = new_ref()
    await engine.submit(ref, build(node("top", "flaky", "next"), node("flaky", attempts=2),
                                   node("next", "first"), node("first")))
    held = await take_map(engine)
    assert sorted(held) == ["first", "flaky"]
    assert (await engine.fail(ref.id, "flaky", held["flaky"].token, "once")).action == "retry"
    assert all(o.accepted for o in await engine.complete_attempts([(held["first"], 1)]))
    before = await rows(engine, ref.id)
    await asyncio.sleep(0.02)
    await engine.promote_due(qid("work"))
    again = await take_map(engine)  # flaky's second attempt and next, in one start
    assert sorted(again) == ["flaky", "next"] and again["flaky"].attempt == 2
    started = await rows(engine, ref.id)
    assert started["flaky"].started_ms == before["flaky"].started_ms
    assert started["flaky"].finished_ms is None
    nxt = started["next"].started_ms
    assert nxt is not None and nxt - before["first"].finished_ms >= 20
    assert started["next"].finished_ms is None
    await asyncio.sleep(0.02)
    assert all(o.accepted for o in await engine.complete_attempts(
        [(again["flaky"], 2), (again["next"], 3)]))
    after = await rows(engine, ref.id)
    assert after["flaky"].started_ms == before["flaky"].started_ms
    assert after["next"].started_ms == nxt
    for name in ("flaky", "next"):
        end = after[name].finished_ms
        assert end is not None and end - nxt >= 20, (name, after[name])
    assert after["first"].finished_ms == before["first"].finished_ms
