"""The operator's /metrics after a real flow on the local cluster: the flow's Jobs counted and
timed per queue, its Redis scripts timed, and its series gone once the Flow and the Queue are
deleted."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import OperatorWorld, Scenario

pytestmark = [pytest.mark.cluster]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Scrape:
    """The operator's /metrics, read again on each call."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            text = response.read().decode()
        return [(s.name, s.labels, s.value)
                for f in text_string_to_metric_families(text) for s in f.samples]

    def value(self, name: str, **labels: str) -> float | None:
        found = [v for n, ls, v in self.samples() if n == name and ls == labels]
        return found[0] if found else None


def test_a_flow_is_counted_timed_and_forgotten_with_its_flow_and_queue(
        operator_world: OperatorWorld) -> None:
    port = free_port()
    with operator_world.scenario(metrics_port=str(port)) as scenario:
        run(scenario, Scrape(port))


def run(scenario: Scenario, scrape: Scrape) -> None:
    queue_id = f"{scenario.namespace}/work"
    scenario.apply(queue("work", "echo"),
                   flow("measured", [{"name": "report", "queue": "work",
                                      "children": [{"name": "count", "queue": "work"}]}]))
    body = scenario.wait_phase("measured")
    assert body["status"]["phase"] == "Succeeded", body["status"]
    scenario.wait_for("the flow counted as Succeeded",
                      lambda: scrape.value("kflow_flows", phase="Succeeded") == 1)

    assert scrape.value("kflow_nodes_dispatched_total", queue=queue_id) == 2
    assert scrape.value("kflow_nodes_completed_total", queue=queue_id) == 2
    assert scrape.value("kflow_node_duration_seconds_count", queue=queue_id,
                        outcome="succeeded") == 2
    assert scrape.value("kflow_queue_wait_seconds_count", queue=queue_id) == 2
    for script in ("flow/create", "queue/take", "flow/start", "flow/complete"):
        assert (scrape.value("kflow_redis_script_duration_seconds_count", script=script)
                or 0) >= 1, script
    names = {name for name, _, _ in scrape.samples()}
    assert {"kflow_build_info", "process_cpu_seconds_total", "python_info"} <= names

    scenario.kube("delete", "flow", "measured", "-n", scenario.namespace, "--wait=true",
                  "--timeout=60s")
    scenario.wait_for("the deleted Flow to leave kflow_flows",
                      lambda: scrape.value("kflow_flows", phase="Succeeded") is None)
    scenario.kube("delete", "queue", "work", "-n", scenario.namespace, "--wait=true",
                  "--timeout=60s")
    scenario.wait_for("the deleted Queue's series to go", lambda: not [
        name for name, labels, _ in scrape.samples() if labels.get("queue") == queue_id])
