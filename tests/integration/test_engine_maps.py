"""Map nodes (forEach) on a real Redis and on a cluster: items from a node's value, a literal
list or a count, added in chunks, resumed after a crash, never twice, values in item order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kflow.api.models import Flow
from kflow.engine import Engine
from kflow.graph import CompiledFlow, compile_flow
from tests.integration.engine_kit import new_ref, run_flow


def compiled(*nodes: dict[str, Any]) -> CompiledFlow:
    return compile_flow(Flow.model_validate(
        {"metadata": {"name": "maps", "namespace": "team-a"}, "spec": {"nodes": list(nodes)}}))


def lister_flow(path: str | None = "files", **merge: Any) -> CompiledFlow:
    for_each: dict[str, Any] = {"from": "list"}
    if path is not None:
        for_each["path"] = path
    return compiled(
        {"name": "merge", "queue": "work", "children": ["process"], **merge},
        {"name": "process", "queue": "work", "data": {"bucket": "b1"}, "forEach": for_each},
        {"name": "list", "queue": "work"})


def handlers(files: Any) -> dict[str, Any]:
    return {"list": lambda a, v: {"files": files},
            "merge": lambda a, v: v["process"]}


def double(attempt: Any, values: Any) -> Any:
    return {"file": attempt.data["item"], "at": attempt.data["index"],
            "bucket": attempt.data["bucket"]}


async def test_a_map_runs_once_per_item_of_a_nodes_value_and_its_parent_gets_them_in_order(
        engine: Engine) -> None:
    ref = new_ref()
    files = [f"f{i}.csv" for i in range(7)]
    assert await engine.submit(ref, lister_flow())
    run = await run_flow(engine, ref.id, {"work"}, handlers(files), default=double)
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Succeeded" and snap.total == 3 + 7
    assert all(run.runs[f"process[{i}]"] == 1 for i in range(7))
    assert "process" not in run.runs  # the map node never runs itself
    assert run.seen_children["merge"]["process"] == [
        {"file": f, "at": i, "bucket": "b1"} for i, f in enumerate(files)]


async def test_an_empty_list_is_a_map_with_no_items_and_the_parent_runs_with_none(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, lister_flow())
    run = await run_flow(engine, ref.id, {"work"}, handlers([]), default=double)
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Succeeded" and snap.total == 3
    assert run.seen_children["merge"] == {"process": []}


async def test_a_path_that_holds_no_list_fails_the_map_node_naming_node_path_and_value(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, lister_flow())
    run = await run_flow(engine, ref.id, {"work"}, handlers("not-a-list"), default=double)
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Failed" and "merge" not in run.runs
    [failure] = [f for f in snap.failures if f.node == "process"]
    assert failure.error == ('forEach of node "process": node "list" returned a string at '
                             "path files, not a list; return a list there, or point "
                             "forEach.path at one")
    ref2 = new_ref()
    assert await engine.submit(ref2, lister_flow(path="files.rows"))
    await run_flow(engine, ref2.id, {"work"}, handlers({"n": 1}), default=double)
    snap2 = await engine.snapshot(ref2.id)
    assert snap2.phase == "Failed"
    assert 'returned no "rows" at files, which is an object (its keys: n)' in \
        snap2.failures[0].error


async def test_literal_items_and_a_count_are_expanded_by_the_engine_in_chunks(
        engine: Engine) -> None:
    engine.chunk_nodes = 100
    ref = new_ref()
    flow = compiled(
        {"name": "sum", "queue": "work", "children": ["square", "tag"]},
        {"name": "square", "queue": "work", "forEach": {"count": 450}},
        {"name": "tag", "queue": "work", "forEach": {"items": ["x", {"y": 1}, None]}})
    assert len(flow.nodes) == 3
    assert await engine.submit(ref, flow)
    run = await run_flow(engine, ref.id, {"work"}, {
        "sum": lambda a, v: sum(v["square"])},
        default=lambda a, v: a.data["item"] ** 2 if isinstance(a.data["item"], int)
        else a.data["item"])
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Succeeded" and snap.total == 3 + 450 + 3
    assert run.seen_children["sum"]["square"] == [i * i for i in range(450)]
    assert run.seen_children["sum"]["tag"] == ["x", {"y": 1}, None]
    assert max(run.runs.values()) == 1


async def test_an_expansion_cut_off_by_a_crash_resumes_where_it_stopped_without_duplicates(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.chunk_nodes = 200
    ref = new_ref()
    store_expand = engine.store.expand
    calls = 0

    async def crash_after_two(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise ConnectionError("the operator died here")
        return await store_expand(*args)

    monkeypatch.setattr(engine.store, "expand", crash_after_two)
    flow = compiled({"name": "fan", "queue": "work", "forEach": {"count": 1000}})
    with pytest.raises(ConnectionError):
        await engine.submit(ref, flow)
    snap = await engine.snapshot(ref.id)
    assert snap.total == 1 + 400 and snap.counts.get("expanding") == 1
    monkeypatch.undo()
    # A new operator (another Engine on the same Redis) reconciles the flow; a second one
    # races it: every chunk is written once.
    other = Engine(engine.store.redis)
    other.chunk_nodes = 150
    await asyncio.gather(engine.reconcile_flow(ref.id), other.reconcile_flow(ref.id))
    snap = await engine.snapshot(ref.id)
    assert snap.total == 1 + 1000 and "expanding" not in snap.counts
    run = await run_flow(engine, ref.id, {"work"}, {}, default=lambda a, v: a.data["index"])
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    assert sorted(run.runs) == sorted(f"fan[{i}]" for i in range(1000))
    assert set(run.runs.values()) == {1}


async def test_an_item_failure_fails_the_map_and_a_retry_runs_only_what_failed(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, lister_flow())
    broken = {"f3"}

    def item(attempt: Any, values: Any) -> Any:
        if attempt.data["item"] in broken:
            raise RuntimeError(f"cannot read {attempt.data['item']}")
        return attempt.data["index"]

    files = [f"f{i}" for i in range(6)]
    run = await run_flow(engine, ref.id, {"work"}, handlers(files), default=item)
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Failed" and "merge" not in run.runs
    assert snap.failures[0].node == "process[3]"
    broken.clear()
    await engine.retry_failed(ref.id)
    rerun = await run_flow(engine, ref.id, {"work"}, handlers(files), default=item)
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    assert "process[3]" in rerun.runs and "process[0]" not in rerun.runs
    assert rerun.seen_children["merge"]["process"] == list(range(6))


async def test_an_ignored_item_leaves_a_null_in_its_place(engine: Engine) -> None:
    ref = new_ref()
    flow = compiled(
        {"name": "merge", "queue": "work", "children": ["process"]},
        {"name": "process", "queue": "work", "forEach": {"items": [1, 2, 3]},
         "opts": {"onFailure": "ignore"}})
    assert await engine.submit(ref, flow)

    def item(attempt: Any, values: Any) -> Any:
        if attempt.data["item"] == 2:
            raise RuntimeError("two is bad")
        return attempt.data["item"] * 10

    run = await run_flow(engine, ref.id, {"work"}, {"merge": lambda a, v: v}, default=item)
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    assert run.seen_children["merge"]["process"] == [10, None, 30]


async def test_the_graph_shows_a_maps_items_as_its_children_in_item_order(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, lister_flow())
    await run_flow(engine, ref.id, {"work"}, handlers([f"f{i}" for i in range(12)]),
                   default=double)
    graph = {n.name: n for n in await engine.graph_nodes(ref.id)}
    assert graph["process"].children == (*(f"process[{i}]" for i in range(12)), "list")
    assert list(graph["merge"].children) == ["process"]
    assert not graph["process[3]"].children
