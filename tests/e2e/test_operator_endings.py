"""How a flow ends on the cluster, the same as under `kflow run --local`: continueParent
siblings run to their end, a failed flow cancels what never started, and the Flow's status
counts add up to its total whenever they are read."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import Scenario

pytestmark = [pytest.mark.cluster]


def counts(body: dict[str, Any]) -> dict[str, int]:
    status = body["status"]
    got: dict[str, int] = status["counts"]
    assert sum(got.values()) == status["total"], status
    return {state: n for state, n in got.items() if n}


def test_continue_parent_on_the_cluster_runs_every_sibling_and_shows_the_failure(
        scenario: Scenario) -> None:
    scenario.apply(
        queue("top", "echo"), queue("ok", "echo"), queue("fails", "fail"),
        queue("slow", "sleep"),
        flow("cont", [{"name": "parent", "queue": "top", "children": [
            {"name": "cont-1", "queue": "fails", "opts": {"continueParentOnFailure": True}},
            {"name": "ok-1", "queue": "ok"},
            {"name": "slow-1", "queue": "slow", "data": {"seconds": 8}}]}]))

    body = scenario.wait_phase("cont")

    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert counts(body) == {"completed": 3, "failed": 1}
    assert body["status"]["progress"] == "4/4"
    nodes = scenario.nodes("cont")
    assert {n: i.state for n, i in nodes.items()} == {
        "parent": "completed", "cont-1": "failed", "ok-1": "completed", "slow-1": "completed"}
    assert nodes["slow-1"].result == {"slept": True, "attempt": 1}  # never cut off
    # The parent started before slow-1 ended, and read cont-1's error.
    assert "slow-1" not in nodes["parent"].result["children"]
    assert "fails on purpose" in nodes["parent"].result["failed"]["cont-1"]


def test_a_failed_flow_on_the_cluster_cancels_what_never_started(scenario: Scenario) -> None:
    scenario.apply(
        queue("top", "echo"), queue("fails", "fail"), queue("slow", "sleep"),
        flow("ends", [{"name": "root", "queue": "top", "children": [
            {"name": "boom", "queue": "fails"},
            {"name": "later", "queue": "top", "children": [
                {"name": "slow", "queue": "slow", "data": {"seconds": 8}}]}]}]))

    body = scenario.wait_phase("ends")
    assert body["status"]["phase"] == "Failed", body["status"]
    counts(body)
    # slow runs to its end and is recorded; later, waiting on it, was cancelled at once.
    scenario.wait_for("slow's outcome in the Flow status",
                      lambda: counts(scenario.get_flow("ends")).get("completed") == 1, 60)
    assert counts(scenario.get_flow("ends")) == {"failed": 2, "completed": 1, "cancelled": 1}
    nodes = scenario.nodes("ends")
    assert nodes["later"].state == "cancelled"
    assert nodes["later"].error == "not started: the flow failed"
    assert not scenario.events("NodeFailed") or all(
        "later" not in e.get("message", "") for e in scenario.events("NodeFailed"))


def test_a_flow_over_256_kib_still_obeys_suspend_and_cancel(scenario: Scenario) -> None:
    # kubectl create takes it; the operator must be able to record that it handled it (its
    # bookkeeping annotation cannot hold a copy of the spec) and still react to changes.
    leaves = [f"process-item-{i:05d}" for i in range(3_500)]
    scenario.apply(flow("wide", [
        {"name": "aggregate-results", "queue": "aggregator", "children": leaves},
        *({"name": leaf, "queue": "no-such-queue"} for leaf in leaves)]))
    scenario.wait_phase("wide", ("Running",), timeout=120)

    scenario.kube("patch", "flow", "wide", "-n", scenario.namespace, "--type=merge",
                  "-p", '{"spec": {"suspend": true}}')
    scenario.wait_phase("wide", ("Suspended",), timeout=60)
    scenario.kube("patch", "flow", "wide", "-n", scenario.namespace, "--type=merge",
                  "-p", '{"spec": {"cancel": true}}')
    body = scenario.wait_phase("wide", ("Cancelled",), timeout=60)
    counts(body)  # they add up at every read, also while the nodes are being cancelled
    # The phase changes first; the nodes that never started are then cancelled a page at a
    # time, and a status written in between shows some still ready.
    scenario.wait_for("every node cancelled in the Flow status",
                      lambda: counts(scenario.get_flow("wide")) == {"cancelled": 3_501}, 60)
    body = scenario.get_flow("wide")
    assert body["status"]["phase"] == "Cancelled"
    annotations = body["metadata"].get("annotations") or {}
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 4096, annotations.keys()
    assert "Too long" not in scenario.operator.log_tail(400)
