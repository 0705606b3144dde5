"""Exit handlers (spec.onExit) run as Job pods by the operator (a real process) once the Flow
has ended: they read its phase and failures, and their own outcome is reported beside it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kflow.api.ids import FlowId
from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import Scenario
from kflow.engine import Engine, NodeInfo, exit_flow_id

pytestmark = [pytest.mark.cluster]


def exit_nodes(scenario: Scenario, name: str) -> dict[str, NodeInfo]:
    """The exit handlers' nodes, read from their own flow in Redis."""
    import redis.asyncio as aioredis

    flow_id = exit_flow_id(FlowId.of(scenario.namespace, scenario.uid(name)))

    async def read() -> dict[str, NodeInfo]:
        client: Any = aioredis.Redis.from_url(scenario.redis_url)
        try:
            return await Engine(client, prefix=scenario.prefix).node_infos(flow_id)
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_a_failed_flows_exit_handlers_get_its_phase_and_failure_and_fail_beside_it(
        scenario: Scenario) -> None:
    scenario.apply(
        queue("work", "fail"), queue("report", "echo"), queue("page", "fail"),
        flow("backup", [{"name": "dump", "queue": "work"}], onExit=[
            # page-oncall runs after report and fails: the exit handlers fail, not the Flow.
            {"name": "page-oncall", "queue": "page", "children": [
                {"name": "report", "queue": "report", "data": {"channel": "#ops"}}]}]),
    )

    scenario.wait_for("the exit handlers to end", lambda: (
        (scenario.get_flow("backup").get("status") or {}).get("exitHandlers") or {}
    ).get("phase") == "Failed", timeout=240)

    status = scenario.get_flow("backup")["status"]
    assert status["phase"] == "Failed" and status["progress"] == "1/1"
    exits = status["exitHandlers"]
    assert exits["progress"] == "2/2"
    assert [f["node"] for f in exits["failures"]] == ["page-oncall"]
    assert "page-oncall fails on purpose" in exits["failures"][0]["error"]
    nodes = exit_nodes(scenario, "backup")
    assert nodes["report"].state == "completed" and nodes["page-oncall"].state == "failed"
    seen = nodes["report"].result["data"]
    assert seen["channel"] == "#ops"
    assert {k: seen["flow"][k] for k in ("name", "namespace", "phase")} == {
        "name": "backup", "namespace": scenario.namespace, "phase": "Failed"}
    [failure] = seen["flow"]["failures"]
    assert failure["node"] == "dump" and "dump fails on purpose" in failure["error"]
    scenario.wait_for("an ExitHandlerFailed Warning event", lambda: any(
        e["type"] == "Warning" and "page-oncall" in e["message"]
        for e in scenario.events("ExitHandlerFailed")), timeout=60)
    # The Flow's own verdict is its run's: Stalled by its failure, never by its exit handlers.
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Stalled"]["reason"] == "FlowFailed"
