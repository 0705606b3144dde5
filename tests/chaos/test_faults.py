"""The chaos suite: a fault during a running flow, then the flow must end as if nothing happened.

After each fault: the Flow reaches Succeeded, every node's side effect (counted by the node
code in a ledger, tests/chaos/nodes.py) happened once, no kflow Job, Deployment or Redis key
is left behind once the Flow and Queues are deleted, and a restart after the end runs nothing.

A node may have run twice only when its first run's result could not have been committed: its
process was killed, or Redis was down when it finished (the design: side effects a node already
committed, its stored result, are never repeated). Each test names those nodes; any other
second run fails it.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kflow.devkit.chaos import (
    AofRedis,
    ApiServer,
    Ledger,
    flow_labels,
    kill9_worker,
    redis_cut,
    rules_tagged,
)
from kflow.devkit.manifests import flow, pod_template
from kflow.devkit.operator import TERMINAL, Scenario
from tests.e2e.test_operator_restart import chains, progress_done

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.slow]

NODES = "tests.chaos.nodes:counted"
FIGURES = Path(os.environ.get("KFLOW_CHAOS_FIGURES", "/tmp/kflow-chaos-figures.jsonl"))


def counted_queue(name: str, ledger: Ledger, *, concurrency: int | None = None,
                  workers: dict[str, int] | None = None) -> dict[str, Any]:
    """A Queue running tests/chaos/nodes.py:counted: Job mode, or Worker mode with `workers`."""
    spec: dict[str, Any] = {
        "mode": "Worker" if workers else "Job",
        "template": pod_template([NODES], extra_env={"KFLOW_CHAOS_LEDGER_URL": ledger.url})}
    if workers:
        spec["workers"] = workers
    if concurrency is not None:
        spec["concurrency"] = concurrency
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": name},
            "spec": spec}


def slow(nodes: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    return [{**node, "data": {"seconds": seconds}} for node in nodes]


@dataclass
class Outcome:
    """What a fault did, measured before anything is asserted (FIGURES gets one line each)."""

    fault: str
    phase: str | None = None
    recovered_s: float | None = None  # from the fault's end to the Flow's final phase
    nodes: int = 0
    not_completed: list[str] = field(default_factory=list)
    never_ran: list[str] = field(default_factory=list)
    ran_twice: dict[str, int] = field(default_factory=dict)  # node -> runs, over 1
    ran_twice_allowed: list[str] = field(default_factory=list)
    orphan_jobs: list[str] = field(default_factory=list)
    orphan_deployments: list[str] = field(default_factory=list)
    orphan_keys: list[str] = field(default_factory=list)  # <ns> and <uid> for the test's
    jobs_with_2_pods: list[str] = field(default_factory=list)
    reran_after_end: int = 0  # runs or Jobs started by a restart after the Flow ended
    note: str = ""

    def write(self) -> None:
        with FIGURES.open("a") as out:
            out.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  **self.__dict__}) + "\n")
        print(json.dumps(self.__dict__, indent=1))


def wait_until(what: str, predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def check(scenario: Scenario, redis: AofRedis, ledger: Ledger, outcome: Outcome,
          name: str, fault_end: float, *, allowed: set[str] | None = None,
          timeout: float = 300) -> None:
    """Measure everything the suite promises, then assert it (so a failure still records)."""
    allowed = allowed or set()
    jobs, pods = (next(w for w in scenario.watchers if w.resource == kind)
                  for kind in ("jobs", "pods"))
    try:
        try:
            body = scenario.wait_phase(name, timeout=timeout)
            outcome.phase = body["status"]["phase"]
            outcome.recovered_s = round(time.monotonic() - fault_end, 1)
        except AssertionError as exc:
            outcome.phase = (scenario.get_flow(name).get("status") or {}).get("phase")
            outcome.note = f"no final phase within {timeout:.0f}s after the fault: " + \
                str(exc).splitlines()[0][:300]
        uid = scenario.uid(name)
        nodes = scenario.nodes(name)
        outcome.nodes = len(nodes)
        outcome.not_completed = sorted(n for n, i in nodes.items() if i.state != "completed")
        counts = ledger.counts(uid)
        outcome.never_ran = sorted(n for n in nodes if n not in counts)
        outcome.ran_twice = {n: c for n, c in sorted(counts.items()) if c > 1}
        outcome.ran_twice_allowed = sorted(allowed)
        # Kubernetes may start a Job's pod twice (the Job controller's documented at-least-once).
        per_job: dict[str, int] = {}
        for pod in pods.made().values():
            job = (pod["metadata"].get("labels") or {}).get("job-name")
            if job:
                per_job[job] = per_job.get(job, 0) + 1
        outcome.jobs_with_2_pods = sorted(job for job, n in per_job.items() if n > 1)
        if outcome.phase is not None and outcome.phase in ("Succeeded", "Failed"):
            # An operator restart after the end must run nothing again.
            runs, made = len(ledger.executions(uid)), len(jobs.created())
            scenario.operator.kill9()
            scenario.operator.start()
            time.sleep(8)
            outcome.reran_after_end = (len(ledger.executions(uid)) - runs
                                       + len(jobs.created()) - made)
        wait_until("no kflow Job", lambda: not kflow_objects(scenario, "jobs"), 120)
        outcome.orphan_jobs = kflow_objects(scenario, "jobs")
        scenario.kube("delete", "flows,queues", "--all", "-n", scenario.namespace,
                      "--wait=true", "--timeout=120s", check=False, timeout=150)
        wait_until("no kflow Deployment", lambda: not kflow_objects(scenario, "deployments"), 60)
        outcome.orphan_deployments = kflow_objects(scenario, "deployments")
        wait_until("no Redis key", lambda: not redis.keys(scenario.prefix), 15)
        outcome.orphan_keys = [key.replace(scenario.namespace, "<ns>").replace(uid, "<uid>")
                               for key in redis.keys(scenario.prefix)]
    finally:
        outcome.write()
    assert outcome.phase == "Succeeded", outcome
    assert outcome.not_completed == [] and outcome.never_ran == [], outcome
    assert set(outcome.ran_twice) <= allowed and max(
        outcome.ran_twice.values(), default=1) <= 2, outcome
    assert outcome.reran_after_end == 0, outcome
    assert outcome.orphan_jobs == [] and outcome.orphan_deployments == [], outcome
    assert outcome.orphan_keys == [], outcome


def running_mid_flow(scenario: Scenario, ledger: Ledger, name: str, *, chains_of: tuple[int, int],
                     seconds: float, concurrency: int) -> str:
    """Start a Job-mode flow of `chains_of` (count, length) chains of counted nodes; return once
    two nodes are done and another one is inside its code (the moment to break something)."""
    scenario.apply(counted_queue("j", ledger, concurrency=concurrency),
                   flow(name, slow(chains(*chains_of, "j"), seconds)))
    scenario.wait_for("2 nodes done", lambda: progress_done(scenario, name) >= 2, timeout=300)
    uid = scenario.uid(name)
    scenario.wait_for("a node running its code",
                      lambda: ledger.started(uid) > len(ledger.executions(uid)), timeout=300)
    return uid


def kflow_objects(scenario: Scenario, kind: str) -> list[str]:
    items = scenario.kube.json(kind, "-n", scenario.namespace).get("items") or []
    return sorted(obj["metadata"]["name"] for obj in items if flow_labels(obj))


def test_control_without_a_fault(scenario: Scenario, faulty_redis: AofRedis,
                                  ledger: Ledger) -> None:
    """The same checks with no fault: what fails here is not the faults' doing."""
    scenario.apply(counted_queue("j", ledger, concurrency=3),
                   flow("calm", slow(chains(2, 3, "j"), 1)))

    check(scenario, faulty_redis, ledger, Outcome("none (control)"), "calm",
          time.monotonic())


def test_operator_killed_5_times_at_random_during_a_500_node_flow(
        scenario: Scenario, faulty_redis: AofRedis, ledger: Ledger) -> None:
    seed = int(os.environ.get("KFLOW_CHAOS_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    scenario.apply(counted_queue("w", ledger, workers={"max": 2, "nodesPerWorker": 10,
                                                       "idleSeconds": 30}),
                   flow("big", slow(chains(20, 25, "w"), 0.5)))
    uid = scenario.uid("big")
    outcome = Outcome(f"operator kill -9 x5 at random (seed {seed}), 500-node flow")
    kills_mid_flow = 0
    # At 5 random points of the run, as the ledger counts nodes run (the status lags behind).
    for threshold in sorted(rng.sample(range(10, 350), 5)):
        scenario.wait_for(f"{threshold} nodes run",
                          lambda t=threshold: len(ledger.executions(uid)) >= t, timeout=600)
        kills_mid_flow += scenario.get_flow("big")["status"].get("phase") not in TERMINAL
        scenario.operator.kill9()
        time.sleep(rng.uniform(0, 3))
        scenario.operator.start()
    outcome.note = f"{kills_mid_flow} of 5 kills before the Flow ended"

    check(scenario, faulty_redis, ledger, outcome, "big", time.monotonic(), timeout=600)

    assert scenario.operator.starts == 7  # the first, 5 after kills, 1 after the end
    assert kills_mid_flow == 5, "the flow ended before the kills: make it longer"


def test_worker_killed_mid_batch(scenario: Scenario, faulty_redis: AofRedis,
                                 ledger: Ledger) -> None:
    children = [f"c{i}" for i in range(16)]
    nodes: list[dict[str, Any]] = [{"name": "join", "queue": "w", "children": children},
             *({"name": c, "queue": "w"} for c in children)]
    scenario.apply(counted_queue("w", ledger, workers={"max": 2, "nodesPerWorker": 4,
                                                       "idleSeconds": 30}),
                   flow("batch", slow(nodes, 4)))
    uid = scenario.uid("batch")
    scenario.wait_for("a batch running", lambda: ledger.started(uid) >= 4, timeout=300)

    killed = kill9_worker(scenario.namespace, "w")
    outcome = Outcome(f"worker process kill -9 mid-batch (pid ns {killed})")

    # A node whose run was on the killed process may run again: its result was never stored.
    check(scenario, faulty_redis, ledger, outcome, "batch", time.monotonic(),
          allowed={run.node for run in ledger.executions(uid) if run.pidns == killed})


def test_redis_killed_for_30s_and_back_from_its_aof(scenario: Scenario, faulty_redis: AofRedis,
                                                    ledger: Ledger) -> None:
    # Killed while a node is inside its code: it finishes, and stores, while Redis is down.
    uid = running_mid_flow(scenario, ledger, "aof", chains_of=(4, 3), seconds=6,
                                 concurrency=4)

    down = time.time()
    faulty_redis.kill9()
    time.sleep(30)
    faulty_redis.start()
    up = time.time()
    outcome = Outcome("Redis kill -9, down 30 s, restarted from its AOF (same port and dir)")

    # A node that finished while Redis was down could not store its result: it may run again.
    check(scenario, faulty_redis, ledger, outcome, "aof", time.monotonic(),
          allowed={r.node for r in ledger.executions(uid) if down - 1 <= r.at <= up + 5})


def test_api_server_restarted(scenario: Scenario, faulty_redis: AofRedis,
                              ledger: Ledger) -> None:
    running_mid_flow(scenario, ledger, "api", chains_of=(4, 3), seconds=5,
                               concurrency=4)

    api = ApiServer()
    with api.down():
        restarted = time.monotonic()
    readyz = wait_until("the API server ready", lambda: scenario.kube(
        "get", "--raw", "/readyz", check=False).returncode == 0, 120)
    outcome = Outcome(f"kube-apiserver restarted (SIGTERM, SIGKILL after 3 s: gone in "
                      f"{api.stop_s:.1f} s, start to "
                      f"/readyz {time.monotonic() - restarted:.1f} s)")
    assert readyz, "the API server did not come back within 120 s"

    check(scenario, faulty_redis, ledger, outcome, "api", time.monotonic())


def test_operator_redis_connection_dropped_for_60s(scenario: Scenario, faulty_redis: AofRedis,
                                                   ledger: Ledger) -> None:
    running_mid_flow(scenario, ledger, "cut", chains_of=(3, 4), seconds=2,
                               concurrency=3)

    with redis_cut(faulty_redis.port):
        time.sleep(60)
    assert rules_tagged() == []
    outcome = Outcome("operator's Redis packets dropped (no reset) for 60 s")

    check(scenario, faulty_redis, ledger, outcome, "cut", time.monotonic())
