"""Conditions (when) and children added by running code, on a real Redis and a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.api.models import Flow
from kflow.engine import ChildrenError, Engine, FlowStateError
from kflow.graph import CompiledFlow, compile_flow
from tests.integration.engine_kit import new_ref, run_flow, take_map


def compiled(*nodes: dict[str, Any]) -> CompiledFlow:
    return compile_flow(Flow.model_validate(
        {"metadata": {"name": "dyn", "namespace": "team-a"}, "spec": {"nodes": list(nodes)}}))


# ---- when ------------------------------------------------------------------------------------


def gated_flow(when: str) -> CompiledFlow:
    return compiled(
        {"name": "report", "queue": "work", "children": ["publish", "check"]},
        {"name": "publish", "queue": "work", "children": ["check"], "when": when,
         "data": {"min": 10}},
        {"name": "check", "queue": "work"})


async def test_a_true_condition_runs_the_node_and_a_false_one_skips_it(engine: Engine) -> None:
    for score, expected in ((12, "completed"), (3, "skipped")):
        ref = new_ref()
        assert await engine.submit(ref, gated_flow(
            'values["check"].score >= data.min && outcomes["check"] == "completed"'))
        run = await run_flow(engine, ref.id, {"work"}, {
            "check": lambda a, v, score=score: {"score": score},
            "report": lambda a, v: sorted(v)})
        snap = await engine.snapshot(ref.id)
        assert snap.phase == "Succeeded", snap
        infos = await engine.node_infos(ref.id)
        assert infos["publish"].state == expected
        assert ("publish" in run.runs) == (expected == "completed")
        # A skipped child is one the parent goes on without, as an ignored one.
        assert run.seen_children["report"] == (
            {"check": {"score": score}, "publish": "publish"} if expected == "completed"
            else {"check": {"score": score}})
    ignored = await engine.ignored_failures(ref.id, "report")
    assert ignored == {"publish": 'when "values["check"].score >= data.min && '
                                  'outcomes["check"] == "completed"" was false'}


async def test_a_condition_that_cannot_be_evaluated_fails_the_node_with_why(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, gated_flow('values["check"].missing > 1'))
    await run_flow(engine, ref.id, {"work"}, {"check": lambda a, v: {"score": 1}})
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Failed"
    [failure] = [f for f in snap.failures if f.node == "publish"]
    assert failure.error.startswith('when: "values["check"].missing > 1" failed:'), failure


async def test_a_leaf_condition_and_a_skipped_root_and_a_condition_on_a_map(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, compiled(
        {"name": "never", "queue": "work", "when": "data.enabled", "data": {"enabled": False}},
        {"name": "fan", "queue": "work", "forEach": {"count": 3}, "when": "true"}))
    run = await run_flow(engine, ref.id, {"work"}, {})
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Succeeded", snap
    assert snap.counts == {"skipped": 1, "completed": 4}
    assert sorted(run.runs) == ["fan[0]", "fan[1]", "fan[2]"]


# ---- add_children --------------------------------------------------------------------------


def parts(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"name": f"{prefix}-{i}", "queue": "work", "data": {"i": i}} for i in range(n)]


async def test_a_node_adds_children_to_itself_and_runs_again_with_their_values(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, compiled(
        {"name": "top", "queue": "work", "children": ["split"]},
        {"name": "split", "queue": "work"}))
    runs: list[dict[str, Any]] = []
    taken = await take_map(engine)
    split = taken["split"]
    added = await engine.add_children(ref.id, "split", split.token, parts("part", 3))
    assert added == ["part-0", "part-1", "part-2"]
    outcome = await engine.complete(ref.id, "split", split.token, "dropped")
    assert outcome.accepted
    assert (await engine.node_infos(ref.id))["split"].state == "waiting-children"
    run = await run_flow(engine, ref.id, {"work"}, {
        "split": lambda a, v: (runs.append(v), sum(v.values()))[1],
        "top": lambda a, v: v},
        default=lambda a, v: a.data["i"] * 10)
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    assert runs == [{"part-0": 0, "part-1": 10, "part-2": 20}]
    assert run.seen_children["top"] == {"split": 30}
    infos = await engine.node_infos(ref.id)
    assert infos["split"].attempt == 1  # running again after its children is no retry
    assert (await engine.snapshot(ref.id)).total == 5


async def test_a_retried_attempt_that_adds_again_ends_up_with_one_set_of_children(
        engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, compiled(
        {"name": "split", "queue": "work", "opts": {"attempts": 3}}))
    first = (await take_map(engine))["split"]
    assert await engine.add_children(ref.id, "split", first.token, parts("a", 2)) == [
        "a-0", "a-1"]
    # The first attempt dies after the add (its pod is lost): the node runs again...
    await engine.fail(ref.id, "split", first.token, "pod killed")
    taken = await take_map(engine)  # the retry, and the children the first attempt added
    second = taken["split"]
    assert second.attempt == 2 and sorted(taken) == ["a-0", "a-1", "split"]
    # ...and adds again, maybe other names: nothing is added, it gets the first set back.
    assert await engine.add_children(ref.id, "split", second.token, parts("b", 5)) == [
        "a-0", "a-1"]
    # The dead attempt cannot add either.
    with pytest.raises(FlowStateError, match="no longer holds the node"):
        await engine.add_children(ref.id, "split", first.token, parts("c", 1))
    await engine.complete(ref.id, "split", second.token, None)
    for name in ("a-0", "a-1"):
        await engine.complete(ref.id, name, taken[name].token, taken[name].data["i"])
    await run_flow(engine, ref.id, {"work"}, {"split": lambda a, v: sorted(v)})
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Succeeded" and snap.total == 3
    infos = await engine.node_infos(ref.id)
    assert sorted(infos) == ["a-0", "a-1", "split"]
    assert infos["split"].result == ["a-0", "a-1"]


async def test_a_node_adds_children_to_its_waiting_parent(engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, compiled(
        {"name": "merge", "queue": "work", "children": ["scan"]},
        {"name": "scan", "queue": "work"}))
    scan = (await take_map(engine))["scan"]
    added = await engine.add_children(ref.id, "scan", scan.token, [
        {"name": "shard-0", "queue": "work", "children": ["prep"], "data": {"i": 0}},
        {"name": "prep", "queue": "work", "data": {"i": 5}}], parent="merge")
    assert added == ["prep", "shard-0"]
    await engine.complete(ref.id, "scan", scan.token, "scanned")
    run = await run_flow(engine, ref.id, {"work"}, {"merge": lambda a, v: v},
                         default=lambda a, v: a.data["i"])
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    # merge waited for the added child too (not for prep: shard-0's own child).
    assert run.seen_children["merge"] == {"scan": "scanned", "shard-0": 0}
    assert run.runs["prep"] == 1 and run.runs["shard-0"] == 1


async def test_bad_children_are_refused_naming_the_problem(engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, compiled(
        {"name": "top", "queue": "work", "children": ["busy"]},
        {"name": "busy", "queue": "work"}, {"name": "other", "queue": "work"}))
    busy = (await take_map(engine))["busy"]
    cases: list[tuple[Any, str | None, str]] = [
        ([{"name": "other", "queue": "work"}], None,
         'the flow already has a node named "other"'),
        ([{"name": "x", "queue": "Bad_Queue"}], None, "children[0].queue"),
        ([{"name": "x", "queue": "work", "children": ["y"]},
          {"name": "y", "queue": "work", "children": ["x"]}], None, "cycle"),
        ([{"name": "x", "queue": "work", "children": ["top"]}], None,
         'lists child "top", which no node defines'),
        ([{"name": "x", "queue": "work"}], "other", 'cannot add children to "other": it is '),
        ([], None, "at least one child"),
    ]
    for children, parent, expected in cases:
        with pytest.raises(ChildrenError) as caught:
            await engine.add_children(ref.id, "busy", busy.token, children, parent)
        assert expected in str(caught.value), str(caught.value)
        assert 'node "busy"' in str(caught.value)
    assert (await engine.snapshot(ref.id)).total == 3  # nothing was written


async def test_added_children_inherit_the_flows_defaults(engine: Engine) -> None:
    ref = new_ref()
    flow = compile_flow(Flow.model_validate({
        "metadata": {"name": "dyn", "namespace": "team-a"},
        "spec": {"defaults": {"attempts": 2}, "nodes": [{"name": "split", "queue": "work"}]}}))
    assert flow.defaults == {"attempts": 2}
    assert await engine.submit(ref, flow)
    split = (await take_map(engine))["split"]
    await engine.add_children(ref.id, "split", split.token, parts("p", 1))
    await engine.complete(ref.id, "split", split.token, None)
    tries: list[int] = []

    def flaky(attempt: Any, values: Any) -> Any:
        tries.append(attempt.attempt)
        if attempt.attempt == 1:
            raise RuntimeError("first try fails")
        return "ok"

    await run_flow(engine, ref.id, {"work"}, {"split": lambda a, v: v}, default=flaky)
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    assert tries == [1, 2]  # spec.defaults.attempts reached the added child
