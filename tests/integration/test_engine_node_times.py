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
