"""Guards that only a rare path reaches: a resumed add with another chunk size, a rate window
that must free its slots again."""

from __future__ import annotations

import asyncio

import pytest

from kflow.api import SpecError, parse_manifest
from kflow.api.models import Flow
from kflow.engine import Attempt, Engine, FlowStateError, QueueConfig
from kflow.graph import compile_flow
from tests.integration.engine_kit import NS, build, new_ref, node, qid, take_all


async def test_a_resumed_add_with_another_chunk_size_is_refused(engine: Engine) -> None:
    engine.chunk_nodes = 10
    ref = new_ref()
    flow = build(node("sum", *(f"leaf-{i}" for i in range(30)), queue="agg"),
                 *(node(f"leaf-{i}") for i in range(30)))
    chunks = engine._chunks(flow)
    assert len(chunks) == 4
    # A crash after the first chunk: meta Pending, one chunk of 10 nodes written.
    await engine.store.create_flow(ref.id, ref.name, total=31, roots=1, ttl_seconds=None,
                                   chunks=len(chunks), queues=["agg", "work"])
    await engine.store.add_nodes(ref.id, 1, chunks[0])
    engine.chunk_nodes = 7  # the operator came back with another chunk size
    with pytest.raises(FlowStateError, match="4 chunks, this add into 5"):
        await engine.submit(ref, flow)
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Pending" and snap.total == 31
    assert await take_all(engine) == []
    engine.chunk_nodes = 10  # the same split finishes the add, with every node once
    assert await engine.submit(ref, flow)
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Running"
    assert snap.counts == {"ready": 30, "waiting-children": 1}
    assert len(await take_all(engine)) == 30


async def test_a_rate_window_frees_its_slots_once_it_has_passed(engine: Engine) -> None:
    per_ms = 200
    await engine.configure_queue(qid(), QueueConfig(rate_max=2, rate_per_ms=per_ms))
    ref = new_ref()
    await engine.submit(ref, build(*(node(f"n{i}") for i in range(4))))
    assert len(await take_all(engine)) == 2
    assert await take_all(engine) == []  # the window is full
    # Wait for the next take (on the server's clock): a window that never frees fails here.
    later: list[Attempt] = []
    for _ in range(500):
        later = await take_all(engine)
        if later:
            break
        await asyncio.sleep(0.01)
    assert len(later) == 2, "the rate window never let another node start"
    takes = await engine.queue_takes(qid())
    assert [n for _, n in takes] == [2, 2]
    assert takes[1][0] - takes[0][0] >= per_ms  # judged on the server's own clock


def _flow_with_priority(priority: int) -> dict[str, object]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"name": "prio", "namespace": NS},
            "spec": {"nodes": [{"name": "x", "queue": "work", "opts": {"priority": priority}}]}}


async def test_the_highest_priority_the_model_accepts_is_one_the_engine_can_queue(
        engine: Engine) -> None:
    # The model and the store once disagreed (2**21 against 2**21 - 1): a Flow passed
    # validation and then failed inside submit.
    with pytest.raises(SpecError, match="must be at most 2097151"):
        parse_manifest(_flow_with_priority(2**21))
    manifest = parse_manifest(_flow_with_priority(2**21 - 1))
    assert isinstance(manifest, Flow)
    ref = new_ref()
    assert await engine.submit(ref, compile_flow(manifest))
    (x,) = await take_all(engine)
    assert (x.flow_id, x.node) == (ref.id, "x")
