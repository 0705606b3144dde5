"""Restart safety and HA: the operator is killed mid-flow and the flow still ends right."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kflow.devkit.checkout import REPO
from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import OperatorProcess, OperatorWorld, Scenario

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# An any-image node: no Python in the pod, its output is the termination message.
SHELL_NODE = ('echo "{\\"node\\": \\"$KFLOW_NODE\\", \\"attempt\\": $KFLOW_ATTEMPT}" '
              '> /dev/termination-log')


def chains(count: int, length: int, queue_name: str) -> list[dict[str, Any]]:
    """`count` independent chains c<i>-0 <- c<i>-1 <- ... (each node the parent of the next)."""
    nodes = []
    for c in range(count):
        for k in range(length):
            node: dict[str, Any] = {"name": f"c{c}-{k}", "queue": queue_name}
            if k + 1 < length:
                node["children"] = [f"c{c}-{k + 1}"]
            nodes.append(node)
    return nodes


def progress_done(scenario: Scenario, name: str) -> int:
    status = scenario.get_flow(name).get("status") or {}
    done, _, _total = (status.get("progress") or "0/0").partition("/")
    return int(done or 0)


def test_kill_9_three_times_during_a_200_node_flow(scenario: Scenario) -> None:
    scenario.apply(queue("sh", shell=SHELL_NODE, concurrency=10),
                   flow("survivor", chains(20, 10, "sh")))

    for threshold in (25, 80, 140):
        scenario.wait_for(f"{threshold} nodes done",
                          lambda t=threshold: progress_done(scenario, "survivor") >= t,
                          timeout=900)
        scenario.operator.kill9()
        time.sleep(2)
        scenario.operator.start()

    body = scenario.wait_phase("survivor", timeout=1800)

    assert body["status"]["phase"] == "Succeeded", body["status"]
    nodes = scenario.nodes("survivor")
    assert len(nodes) == 200
    assert all(info.state == "completed" for info in nodes.values())
    assert all(info.result["node"] == name for name, info in nodes.items())
    scenario.wait_for("no Job left behind", lambda: scenario.jobs() == [], timeout=120)
    assert scenario.operator.starts == 4


def test_standby_operator_takes_over_when_the_active_one_is_killed(
        operator_world: OperatorWorld) -> None:
    second: OperatorProcess | None = None
    try:
        # On exit the Flow is deleted while the standby still runs its finalizer.
        with operator_world.scenario(start=False, standalone="false",
                                     peering_lifetime="10") as scenario:
            kube = scenario.kube
            kube("apply", "-f", str(REPO / "charts" / "kflow" / "crds" / "kopf-peering.yaml"))
            kube.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                        "metadata": {"name": "kflow"}}, scenario.namespace)
            first = scenario.operator
            second = OperatorProcess(env={**first.env, "KFLOW_PRIORITY": "10"},
                                     log_path=first.log_path.with_suffix(".standby.log"))
            first.env["KFLOW_PRIORITY"] = "20"  # the first is the active one
            first.start()
            second.start()
            scenario.apply(queue("sh", shell=SHELL_NODE, concurrency=2),
                           flow("ha", chains(2, 6, "sh")))
            scenario.wait_for("some nodes done", lambda: progress_done(scenario, "ha") >= 2,
                              timeout=600)
            first.kill9()

            body = scenario.wait_phase("ha", timeout=900)

            assert body["status"]["phase"] == "Succeeded", (body["status"], second.log_tail())
            assert ": succeeded (attempt" in second.log_path.read_text(), \
                "the standby recorded node outcomes after the takeover"
    finally:
        if second is not None:
            second.stop()
