"""The engine's reads for the kflow API: node pages by HSCAN cursor, one node's detail, the
graph for drawing, and following the event stream; on Redis and on a cluster."""

from __future__ import annotations

import asyncio

import pytest

from kflow.api.states import NodeState
from kflow.engine import Engine, FlowNotFound, NodeNotFound
from kflow.engine.engine import SCAN_BUDGET
from kflow.graph.fold import fold
from tests.integration.engine_kit import build, new_ref, node, take_all

WIDTH = 3000  # leaves: enough that the state hash is a real hash table scanned in steps


def fan_out(width: int = WIDTH) -> list:  # type: ignore[type-arg]
    leaves = [node(f"leaf-{i:05d}", data={"i": i}, on_failure="continueParent")
              for i in range(width)]
    return [node("sum", *(n.name for n in leaves), queue="agg"), *leaves]


async def all_pages(engine: Engine, flow_id, **filters):  # type: ignore[no-untyped-def]
    """Follow the cursor to the end; every page's rows and how many pages there were."""
    rows, pages, cursor = [], 0, "0"
    while True:
        page = await engine.node_page(flow_id, cursor=cursor, limit=200, **filters)
        rows.extend(page.rows)
        pages += 1
        assert len(page.rows) <= 200 + 64  # never the whole flow: a bucket or so past limit
        cursor = page.cursor
        if cursor == "0":
            return rows, pages


async def test_pages_cover_every_node_and_filters_keep_only_matches(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(*fan_out()))
    attempts = await take_all(engine, n=150)
    done = attempts[:100]
    await engine.complete_batch([(a.flow_id, a.node, a.token, {"n": a.node}) for a in done])
    for a in attempts[100:110]:
        await engine.fail(a.flow_id, a.node, a.token, "boom\nsecond line")

    rows, pages = await all_pages(engine, ref.id)
    assert pages > 5
    assert {r.name for r in rows} == {"sum"} | {f"leaf-{i:05d}" for i in range(WIDTH)}
    by_name = {r.name: r for r in rows}
    first = by_name[done[0].node]
    assert (first.state, first.attempt, first.result, first.queue) == (
        NodeState.COMPLETED, 1, {"n": done[0].node}, "work")
    # A continueParent child's failure released its parent.
    assert by_name["sum"].queue == "agg" and by_name["sum"].state is NodeState.READY

    failed, _ = await all_pages(engine, ref.id, state=NodeState.FAILED)
    assert sorted(r.name for r in failed) == sorted(a.node for a in attempts[100:110])
    assert all(r.error == "boom\nsecond line" for r in failed)

    matched, _ = await all_pages(engine, ref.id, name_glob="*leaf-0012*")
    assert sorted(r.name for r in matched) == [f"leaf-{i:05d}" for i in range(120, 130)]


async def test_a_filtered_page_is_bounded_and_says_where_to_go_on(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(*fan_out()))
    # No node is active: a search for one scans at most its budget per page, then answers
    # with nothing found and a cursor, never the whole flow in one request.
    page = await engine.node_page(ref.id, limit=10, state=NodeState.ACTIVE)
    assert page.rows == [] and page.cursor != "0"
    assert SCAN_BUDGET * 10 < WIDTH


async def test_node_detail_has_inputs_result_edges_and_logs(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "mid", queue="agg"),
                                   node("mid", "a", "b", queue="agg"),
                                   node("a", data={"x": 1}),
                                   node("b", on_failure="ignore")))
    taken = {a.node: a for a in await take_all(engine)}
    await engine.log(ref.id, "a", taken["a"].token, "hello from a")
    await engine.complete_batch([(ref.id, "a", taken["a"].token, 42)])
    await engine.fail(ref.id, "b", taken["b"].token, "b broke")
    await engine.keep_pod_log(ref.id, "a", 1, "container line\n", failed=False,
                              flow_budget=1 << 20)

    a = await engine.node_detail(ref.id, "a")
    assert (a.row.state, a.data, a.result, a.parents, a.children) == (
        NodeState.COMPLETED, {"x": 1}, 42, ["mid"], [])
    assert [line["msg"] for line in a.logs] == ["hello from a"]
    assert a.attempt_logs == [(1, "container line\n")]
    mid = await engine.node_detail(ref.id, "mid")
    assert (mid.row.state, mid.parents, sorted(mid.children)) == (
        NodeState.READY, ["top"], ["a", "b"])
    assert mid.ignored_failures == {"b": "b broke"} and mid.failed_children == {}

    with pytest.raises(NodeNotFound):
        await engine.node_detail(ref.id, "nope")
    with pytest.raises(FlowNotFound):
        await engine.node_page(new_ref().id)


async def test_graph_nodes_fold_a_fan_out_into_one_group(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(*fan_out(500)))
    nodes = await engine.graph_nodes(ref.id)
    assert len(nodes) == 501
    graph = fold(nodes, collapse=20)
    assert [(n.name, n.group.count if n.group else None) for n in graph.nodes] == [
        ("leaf-00000 (+499)", 500), ("sum", None)]
    assert graph.edges == [("group:leaf-00000", "sum")]


async def test_follow_events_waits_for_the_next_event(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("only")))
    tail = await engine.events_tail(ref.id)
    assert await engine.follow_events(ref.id, tail, block_ms=50) == []

    async def later() -> None:
        await asyncio.sleep(0.2)
        [attempt] = await take_all(engine)
        await engine.complete_batch([(ref.id, "only", attempt.token, 1)])

    task = asyncio.create_task(later())
    events = await engine.follow_events(ref.id, tail, block_ms=10_000)
    await task
    assert events and events[0]["type"] == "started" and events[0]["node"] == "only"
    rest = await engine.follow_events(ref.id, events[-1]["id"], block_ms=1000)
    seen = [e["type"] for e in events + rest]
    assert "completed" in seen
    rows = await engine.node_states(ref.id, ["only", "missing"])
    assert rows[0] is not None and rows[0].state is NodeState.COMPLETED and rows[1] is None
