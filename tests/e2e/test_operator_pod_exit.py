"""Job mode settles an attempt from its pod's own status: the parent is unlocked once the
child's main container has exited 0, without waiting for the Job controller's Complete."""

from __future__ import annotations

import asyncio
import re

import pytest

from kflow.api.ids import FlowId
from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import Scenario
from kflow.engine import Engine

pytestmark = [pytest.mark.cluster]


def test_a_parent_is_unlocked_when_its_childs_main_container_exits(scenario: Scenario) -> None:
    # A second container that never ends keeps the child's pod Running, so its Job is never
    # marked Complete: only the main container's exit can settle the child.
    child = queue("child", "chatty")
    spec = child["spec"]["template"]["spec"]
    spec["containers"].append({
        "name": "log-shipper", "image": spec["containers"][0]["image"],
        "imagePullPolicy": "Never", "command": ["python3", "-c", "import time; time.sleep(3600)"],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}})
    scenario.apply(child, queue("parent", "echo"), flow("shipped", [
        {"name": "report", "queue": "parent",
         "children": [{"name": "load", "queue": "child", "data": {"succeed_on": 1}}]}]))

    assert scenario.wait_phase("shipped", timeout=120)["status"]["phase"] == "Succeeded"
    # The child's result reached the parent: read and stored before the parent was unlocked.
    results = scenario.results("shipped")
    assert results["load"] == {"succeeded_on": 1}
    assert results["report"]["children"] == {"load": {"succeeded_on": 1}}
    # The Job, still running its log shipper, was deleted once the outcome was recorded.
    scenario.wait_for("the child's Job to be deleted", lambda: not [
        j for j in scenario.jobs() if j["metadata"]["annotations"]["kflow.dev/node"] == "load"])
    # One success per attempt, and the attempt's log was kept from its pod before it went.
    log = scenario.operator.log_tail(10_000)
    for node in ("load", "report"):
        assert len(re.findall(rf"node {node}: succeeded \(attempt 1\)", log)) == 1, log
    assert "already recorded" not in log
    [(attempt, text)] = _attempt_logs(scenario, "shipped", "load")
    assert attempt == 1 and "chatty load attempt 1: to stdout" in text


def test_each_step_of_a_chain_is_recorded_once(scenario: Scenario) -> None:
    scenario.apply(queue("chain", "add_one"), flow("chain-4", [
        {"name": f"step-{i}", "queue": "chain", "data": {"value": i},
         **({"children": [f"step-{i - 1}"]} if i else {})} for i in range(4)]))

    assert scenario.wait_phase("chain-4", timeout=180)["status"]["phase"] == "Succeeded"
    assert scenario.results("chain-4") == {"step-0": 1, "step-1": 2, "step-2": 3, "step-3": 4}
    scenario.wait_for("every Job to be deleted", lambda: not scenario.jobs())
    # The pod's exit and the Job's Complete (or its deletion) both arrive: one is recorded.
    log = scenario.operator.log_tail(10_000)
    assert len(re.findall(r"node step-\d: succeeded \(attempt 1\)", log)) == 4, log
    assert "already recorded" not in log and "was deleted while running" not in log


def _attempt_logs(scenario: Scenario, name: str, node: str) -> list[tuple[int, str]]:
    flow_id = FlowId.of(scenario.namespace, scenario.uid(name))

    async def read() -> list[tuple[int, str]]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(scenario.redis_url)
        try:
            return list(await Engine(client, prefix=scenario.prefix).attempt_logs(flow_id, node))
        finally:
            await client.aclose()

    return asyncio.run(read())
