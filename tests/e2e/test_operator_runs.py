"""A Flow whose spec changes (changePolicy) runs each spec once, wherever the operator stops.

The switch from one run to the next (kflow.kube.runs) is: the old run ends, its keys and Jobs
go, one status patch archives it and clears the recording, the new graph is recorded. Each test
stops the operator at one of those points (by making the state it would leave: a change applied
while no operator runs, the keys gone but the status not yet patched, the status patched but
nothing recorded) and checks that a node counting its side effect ran exactly once per run.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import Scenario
from kflow.kube.runs import new_run_status
from tests.e2e.test_operator_state_loss import drop_flow_keys, effects, flow_keys

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def paying(generation_note: str) -> dict[str, Any]:
    """The flow at one generation: the same counted node, data naming the generation."""
    return flow("billing", [{"name": "charge", "queue": "pay", "data": {"v": generation_note}}],
                changePolicy="Restart")


def change(scenario: Scenario, doc: dict[str, Any]) -> None:
    """`kubectl apply` the changed Flow, as a GitOps sync does."""
    scenario.kube("apply", "-n", scenario.namespace, "-f", "-", input=json.dumps(doc))


def finished_run(scenario: Scenario, generation: int) -> dict[str, Any]:
    scenario.wait_for(f"run of generation {generation}", lambda: (
        scenario.get_flow("billing").get("status") or {}).get("runGeneration") == generation,
        timeout=90)
    body = scenario.wait_phase("billing", timeout=180)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    return body


def test_each_spec_runs_once_wherever_the_operator_stops_during_a_switch(
        scenario: Scenario) -> None:
    scenario.apply(queue("pay", "counted"), paying("one"))
    uid = finished_run(scenario, 1)["metadata"]["uid"]
    assert effects(scenario, uid, "charge") == 1

    # 1. Changed while no operator runs: the next one switches at start-up.
    scenario.operator.kill9()
    change(scenario, paying("two"))
    scenario.operator.start()
    body = finished_run(scenario, 2)
    assert effects(scenario, uid, "charge") == 2
    assert [(r["generation"], r["phase"]) for r in body["status"]["runs"]] == [
        (1, "Succeeded")]

    # 2. Stopped after the old run's keys went, before the status said so.
    scenario.operator.kill9()
    change(scenario, paying("three"))
    assert drop_flow_keys(scenario, uid) > 0
    scenario.operator.start()
    body = finished_run(scenario, 3)
    assert effects(scenario, uid, "charge") == 3
    assert [(r["generation"], r["phase"]) for r in body["status"]["runs"]] == [
        (1, "Succeeded"), (2, "Succeeded")]

    # 3. Stopped after the status patch, before the new graph was recorded.
    scenario.operator.kill9()
    change(scenario, paying("four"))
    generation = scenario.get_flow("billing")["metadata"]["generation"]
    drop_flow_keys(scenario, uid)
    patch = new_run_status(body["status"], generation, "Finished")
    scenario.kube("patch", "flow", "billing", "-n", scenario.namespace, "--type=merge",
                  "--subresource=status", "-p", json.dumps({"status": patch}))
    scenario.operator.start()
    body = finished_run(scenario, generation)
    assert effects(scenario, uid, "charge") == 4
    assert [r["generation"] for r in body["status"]["runs"]] == [1, 2, 3]

    # A restart with nothing changed runs nothing.
    scenario.operator.kill9()
    scenario.operator.start()
    time.sleep(8)  # the resumed flow would have a new run's Job by now
    body = scenario.wait_phase("billing")
    assert body["status"]["runGeneration"] == generation and len(body["status"]["runs"]) == 3
    assert effects(scenario, uid, "charge") == 4
    assert flow_keys(scenario, uid)  # the current run's state stays until the Flow goes
