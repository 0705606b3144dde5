"""Exit handlers (spec.onExit) on a real Redis and on a cluster: a flow of their own, started
exactly once when the main flow ends, with its phase and failures in their data, and never
changing the main flow's phase."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.api.models import Flow
from kflow.engine import Attempt, Engine, FlowNotFound, exit_flow_id
from kflow.graph import CompiledFlow, compile_flow
from kflow.store import Completion
from tests.integration.engine_kit import new_ref, run_flow, take_map


def flow_with_exit(**exit_node: Any) -> CompiledFlow:
    return compile_flow(Flow.model_validate({
        "metadata": {"name": "etl", "namespace": "team-a"},
        "spec": {
            "nodes": [{"name": "load", "queue": "work", "children": ["extract"]},
                      {"name": "extract", "queue": "work"}],
            "onExit": [{"name": "notify", "queue": "work", "data": {"channel": "#etl"},
                        "children": [{"name": "cleanup", "queue": "work"}], **exit_node}],
        }}))


def seen_data(into: dict[str, Any]) -> Any:
    def handler(attempt: Attempt, values: Any) -> Any:
        into[attempt.node] = attempt.data
        return "ok"
    return handler


async def test_exit_handlers_run_once_after_the_flow_succeeds(engine: Engine) -> None:
    ref = new_ref("etl")
    assert await engine.submit(ref, flow_with_exit())
    assert await engine.exit_snapshot(ref.id) is None  # nothing before the end
    await run_flow(engine, ref.id, {"work"}, {})
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    exit_id = exit_flow_id(ref.id)
    assert exit_id == f"team-a/{ref.uid}.exit"
    data: dict[str, Any] = {}
    run = await run_flow(engine, exit_id, {"work"}, {}, default=seen_data(data))
    assert dict(run.runs) == {"cleanup": 1, "notify": 1}
    assert data["notify"] == {"channel": "#etl", "flow": {
        "name": "etl", "namespace": "team-a", "phase": "Succeeded", "failures": []}}
    assert data["cleanup"]["flow"]["phase"] == "Succeeded"
    # Whoever sees the end again starts nothing again.
    assert not await engine.start_exit(ref.id)
    assert await engine.reconcile_flow(ref.id) == 0
    assert await take_map(engine) == {}
    summary = await engine.exit_snapshot(ref.id)
    assert summary is not None and summary.phase == "Succeeded" and summary.done == 2


async def test_after_a_failure_they_get_the_phase_and_failures_and_their_own_failure_leaves_it(
        engine: Engine) -> None:
    ref = new_ref("etl")
    assert await engine.submit(ref, flow_with_exit())

    def broken(attempt: Attempt, values: Any) -> Any:
        raise RuntimeError("disk full")

    await run_flow(engine, ref.id, {"work"}, {"extract": broken})
    assert (await engine.snapshot(ref.id)).phase == "Failed"
    data: dict[str, Any] = {}

    def notify_fails(attempt: Attempt, values: Any) -> Any:
        data[attempt.node] = attempt.data
        raise RuntimeError("webhook down")

    await run_flow(engine, exit_flow_id(ref.id), {"work"}, {"notify": notify_fails})
    assert data["notify"]["flow"] == {
        "name": "etl", "namespace": "team-a", "phase": "Failed",
        "failures": [{"node": "extract", "error": "disk full", "attempt": 1}]}
    summary = await engine.exit_snapshot(ref.id)
    assert summary is not None and summary.phase == "Failed"
    assert [(f.node, f.error) for f in summary.failures] == [("notify", "webhook down")]
    main = await engine.snapshot(ref.id)
    assert main.phase == "Failed" and [f.node for f in main.failures] == ["extract"]


async def test_a_failing_exit_handler_leaves_a_succeeded_flow_succeeded(engine: Engine) -> None:
    ref = new_ref("etl")
    assert await engine.submit(ref, flow_with_exit())
    await run_flow(engine, ref.id, {"work"}, {})

    def broken(attempt: Attempt, values: Any) -> Any:
        raise RuntimeError("cleanup failed")

    await run_flow(engine, exit_flow_id(ref.id), {"work"}, {"cleanup": broken})
    summary = await engine.exit_snapshot(ref.id)
    assert summary is not None and summary.phase == "Failed"
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"


async def test_a_cancelled_flow_runs_its_exit_handlers_with_phase_cancelled(
        engine: Engine) -> None:
    ref = new_ref("etl")
    assert await engine.submit(ref, flow_with_exit())
    await engine.cancel(ref.id)
    data: dict[str, Any] = {}
    run = await run_flow(engine, exit_flow_id(ref.id), {"work"}, {}, default=seen_data(data))
    assert dict(run.runs) == {"cleanup": 1, "notify": 1}
    assert data["notify"]["flow"]["phase"] == "Cancelled"
    assert "extract" not in run.runs  # the main flow's nodes stay cancelled


async def test_a_crash_between_the_end_and_the_exit_start_is_repaired_by_reconcile(
        engine: Engine) -> None:
    ref = new_ref("etl")
    assert await engine.submit(ref, flow_with_exit())
    await engine.complete(ref.id, "extract", (await take_map(engine))["extract"].token, 1)
    # The last node's flow step runs, then the process dies before its queue step.
    last = (await take_map(engine))["load"]
    [reply] = await engine.store.complete([(ref.id, [Completion("load", last.token, 2)])])
    assert not isinstance(reply, BaseException) and reply.phase == "Succeeded"
    assert await engine.exit_snapshot(ref.id) is None
    await engine.reconcile_flow(ref.id)  # what the operator's resume (or a local rerun) does
    run = await run_flow(engine, exit_flow_id(ref.id), {"work"}, {})
    assert dict(run.runs) == {"cleanup": 1, "notify": 1}


async def test_deleting_the_flow_deletes_its_exit_flow(engine: Engine) -> None:
    ref = new_ref("etl")
    assert await engine.submit(ref, flow_with_exit())
    await engine.cancel(ref.id)
    assert await engine.exit_snapshot(ref.id) is not None
    await engine.delete(ref.id)
    assert await engine.exit_snapshot(ref.id) is None
    with pytest.raises(FlowNotFound):
        await engine.snapshot(ref.id)
    assert await take_map(engine) == {}  # neither flow's nodes are handed out
