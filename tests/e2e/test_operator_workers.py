"""A Worker-mode queue on the cluster: its Deployment scales 0 -> computed -> 0, never above max."""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
from typing import Any

import pytest

from kflow.devkit.manifests import POD_NODES, flow, pod_template, queue
from kflow.devkit.operator import Kube, Scenario

pytestmark = [pytest.mark.cluster]

FANOUT = 20
POOL = {"min": 0, "max": 3, "nodesPerWorker": 5, "idleSeconds": 5}


def worker_queue(name: str, function: str, workers: dict[str, int]) -> dict[str, Any]:
    """A Worker-mode Queue whose template is the Job-mode form (`args: [module:function]`)."""
    template = pod_template([f"{POD_NODES}:{function}"])
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": name},
            "spec": {"mode": "Worker", "workers": workers, "template": template}}


class DeploymentWatch:
    """`kubectl get deploy --watch`: every replica count the API server held, in order."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.name = name
        self.seen: list[tuple[int, int]] = []  # (spec.replicas, status.replicas)
        self._proc = subprocess.Popen(
            [kube.kubectl, "--kubeconfig", str(kube.kubeconfig), "get", "deployments", "-n",
             namespace, "--watch", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        buffer, depth = "", 0
        for line in self._proc.stdout:
            buffer += line
            depth += line.count("{") - line.count("}")
            if depth == 0 and buffer.strip():
                try:
                    obj = json.loads(buffer)
                except ValueError:
                    obj = {}
                buffer = ""
                if (obj.get("metadata") or {}).get("name") == self.name:
                    self.seen.append((int(obj["spec"].get("replicas") or 0),
                                      int((obj.get("status") or {}).get("replicas") or 0)))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


def queue_status(scenario: Scenario, name: str) -> dict[str, Any]:
    body = scenario.kube.json("queue", name, "-n", scenario.namespace)
    return dict(body.get("status") or {})


def test_worker_pool_scales_from_zero_to_the_computed_count_and_back_to_zero(
        scenario: Scenario) -> None:
    scenario.apply(worker_queue("squares", "square", POOL), queue("sum", "total"))
    deployment = "kflow-worker-squares"
    # The Queue alone makes an empty pool: the Deployment exists with no pods.
    scenario.wait_for("the worker Deployment", lambda: scenario.kube(
        "get", "deployment", deployment, "-n", scenario.namespace, check=False).returncode == 0,
        timeout=60)
    body = scenario.kube.json("deployment", deployment, "-n", scenario.namespace)
    assert body["spec"]["replicas"] == 0
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Queue", "squares")
    main = body["spec"]["template"]["spec"]["containers"][0]
    assert main["command"][:6] == ["kflow", "worker", "--queue",
                                   f"{scenario.namespace}/squares", "--concurrency", "5"]
    assert main["command"][-1] == "tests.e2e.operator_pods.nodes:square"
    url = next(e for e in main["env"] if e["name"] == "KFLOW_REDIS_URL")
    assert url["valueFrom"]["secretKeyRef"] == {"name": "kflow-redis", "key": "url"}

    watch = DeploymentWatch(scenario.kube, scenario.namespace, deployment)
    jobs = scenario.watch_jobs()
    workers_seen: list[int] = []
    try:
        children = [{"name": f"sq-{i}", "queue": "squares", "data": {"n": i, "sleep": 1.5}}
                    for i in range(FANOUT)]
        scenario.apply(flow("fanout", [{"name": "sum", "queue": "sum", "children": children}]))

        def pool_is_full() -> bool:
            workers_seen.append(int(queue_status(scenario, "squares").get("workers") or 0))
            return workers_seen[-1] == POOL["max"]

        # 20 ready nodes at 5 per worker ask for 4 workers; max caps it at 3.
        scenario.wait_for("3 worker pods reported in the Queue status", pool_is_full,
                          timeout=120)
        table = scenario.kube("get", "queues", "-n", scenario.namespace).stdout
        header, *rows = table.splitlines()
        assert header.split()[:5] == ["NAME", "MODE", "WAITING", "ACTIVE", "WORKERS"]
        squares = next(r.split() for r in rows if r.startswith("squares"))
        assert squares[1] == "Worker" and squares[4] == "3", table

        done = scenario.wait_phase("fanout", timeout=300)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        results = scenario.results("fanout")
        assert results["sum"] == {"count": FANOUT, "sum": sum(i * i for i in range(FANOUT))}
        assert all(results[f"sq-{i}"] == i * i for i in range(FANOUT))

        # Idle for idleSeconds: back to no workers, and the status says so.
        scenario.wait_for("the pool back at 0 replicas", lambda: scenario.kube.json(
            "deployment", deployment, "-n", scenario.namespace)["spec"]["replicas"] == 0,
            timeout=120)
        scenario.wait_for("WORKERS 0 in the Queue status",
                          lambda: queue_status(scenario, "squares").get("workers") == 0,
                          timeout=120)
    finally:
        watch.stop()

    replicas = [spec for spec, _ in watch.seen]
    pods = [status for _, status in watch.seen]
    assert max(replicas) == POOL["max"], watch.seen
    assert max(pods) <= POOL["max"], watch.seen
    assert replicas[-1] == 0, watch.seen
    # It went up once and came down once: no flapping in between.
    changes = [b for a, b in itertools.pairwise(replicas) if a != b]
    assert changes == [POOL["max"], 0], watch.seen
    assert max(workers_seen) <= POOL["max"]
    nodes = scenario.nodes("fanout")
    assert all(info.state == "completed" for info in nodes.values())
    assert jobs.created(queue="squares") == set(), "Worker-mode nodes never run as Jobs"
    assert len(jobs.created(queue="sum")) == 1, "the Job-mode parent ran once, as a Job"


def test_mode_change_removes_the_pool_and_an_external_scaler_is_left_alone(
        scenario: Scenario) -> None:
    external = worker_queue("by-keda", "square", POOL)
    external["metadata"]["annotations"] = {"kflow.dev/scaler": "external"}
    scenario.apply(worker_queue("switch", "square", POOL), external)
    scenario.wait_for("the worker Deployment of switch", lambda: scenario.kube(
        "get", "deployment", "kflow-worker-switch", "-n", scenario.namespace,
        check=False).returncode == 0, timeout=60)

    scenario.kube("patch", "queue", "switch", "-n", scenario.namespace, "--type=merge",
                  "-p", '{"spec": {"mode": "Job"}}')
    scenario.wait_for("the Deployment gone after the switch to Job mode", lambda: scenario.kube(
        "get", "deployment", "kflow-worker-switch", "-n", scenario.namespace,
        check=False).returncode != 0, timeout=60)

    # Work on the externally scaled queue is reported, but no pool is made for it.
    scenario.apply(flow("waits", [{"name": f"n{i}", "queue": "by-keda", "data": {"n": i}}
                                  for i in range(3)]))
    scenario.wait_for("3 waiting nodes in the Queue status",
                      lambda: queue_status(scenario, "by-keda").get("waiting") == 3, timeout=60)
    assert scenario.kube("get", "deployment", "kflow-worker-by-keda", "-n",
                         scenario.namespace, check=False).returncode != 0
    assert "workers" not in queue_status(scenario, "by-keda")
    assert scenario.jobs() == [], "a Worker-mode queue's nodes never become Jobs"
