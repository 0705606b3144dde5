"""A deleted Queue leaves nothing in Redis; nodes still on it keep their places."""

from __future__ import annotations

from typing import Any

from kflow.engine import Engine, QueueConfig
from tests.integration.engine_kit import build, new_ref, node, qid, take_map


async def queue_keys(engine: Engine, queue: str) -> set[str]:
    client: Any = engine.store.redis
    pattern = f"kflow:q:{{{qid(queue)}}}:*"
    return {k.decode() if isinstance(k, bytes) else k
            async for k in client.scan_iter(match=pattern, count=1000)}


async def test_a_deleted_queue_that_ran_its_nodes_leaves_no_key(engine: Engine) -> None:
    await engine.configure_queue(qid("pay"), QueueConfig(concurrency=2, rate_max=10,
                                                         rate_per_ms=1000, max_stalled=1))
    ref = new_ref()
    await engine.submit(ref, build(node("charge", queue="pay")))
    charge = (await take_map(engine, "pay"))["charge"]
    await engine.complete(ref.id, "charge", charge.token, "paid")
    assert await queue_keys(engine, "pay")  # config, rate, seq, takes

    assert await engine.forget_queue(qid("pay")) == 0

    assert await queue_keys(engine, "pay") == set()


async def test_nodes_still_on_a_deleted_queue_keep_their_places(engine: Engine) -> None:
    await engine.configure_queue(qid("pay"), QueueConfig(concurrency=1))
    ref = new_ref()
    await engine.submit(ref, build(node("top", "a", "b", queue="other"),
                                   node("a", queue="pay"), node("b", queue="pay")))

    assert await engine.forget_queue(qid("pay")) == 2

    left = {k.rsplit(":", 1)[1] for k in await queue_keys(engine, "pay")}
    assert left == {"ready", "seq"}
    # A Queue made again with the name serves them.
    assert set(await take_map(engine, "pay")) == {"a", "b"}
