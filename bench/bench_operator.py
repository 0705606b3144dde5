"""Operator benchmarks on the local cluster: unlock latency, pod-per-node overhead, memory.

Needs the local cluster (`make cluster-up`). Starts a private Redis and the operator as a
process, like the e2e tests, and records three sections of bench/RESULTS.md:
- unlock latency: a child's Job seen finished by the operator -> the parent's Job created,
  read from the operator's own log lines over a 20-node chain;
- pod-per-node overhead: wall time of that 20-node chain of no-op nodes, per node;
- operator memory (RSS) with 100 flows of 100 nodes admitted and running at once.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import Scenario, bench_world
from kflow.devkit.procs import rss_kib
from kflow.devkit.results import percentile, record, table

UNLOCK_LINE = re.compile(r"node (\S+): Job \S+ created .*?, (\d+) ms after its last child")




def chain(scenario: Scenario, length: int) -> None:
    nodes: list[dict[str, Any]] = [
        {"name": f"step-{i}", "queue": "chain", "data": {"value": i},
         **({"children": [f"step-{i - 1}"]} if i else {})}
        for i in range(length)
    ]
    scenario.apply(queue("chain", "add_one"), flow(f"chain-{length}", nodes))
    t0 = time.monotonic()
    body = scenario.wait_phase(f"chain-{length}", timeout=length * 30)
    wall = time.monotonic() - t0
    assert body["status"]["phase"] == "Succeeded", body["status"]
    latencies = [int(m.group(2)) for m in UNLOCK_LINE.finditer(scenario.operator.log_tail(10_000))]
    record("Operator: unlock latency on the cluster (issue 4)", table(
        ["samples", "p50", "p90", "p99", "max"],
        [[len(latencies), *(f"{percentile(latencies, p):.0f} ms" for p in (50, 90, 99)),
          f"{max(latencies, default=0)} ms"]]) + f"""

From the operator handling a child's finished Job (watch event) to the parent's Job
created in the API server, over a {length}-node chain (each step one Job pod), read from the
operator's log. Target p99 < 1 s; Argo Workflows requeues every 10 s by default.""")
    record("Operator: pod-per-node overhead (issue 4)", table(
        ["flow", "wall time", "per node"],
        [[f"{length}-node chain of no-op Python nodes", f"{wall:.1f} s",
          f"{wall / length:.2f} s"]]) + """

Apply to Succeeded, one Job pod per node run one after the other: pod creation, image
already present, Python start-up and the kflow SDK, the Job watch and the unlock. This is the
cost worker pools (`kflow worker`) remove.""")


def memory(scenario: Scenario, flows: int, nodes: int) -> None:
    assert scenario.operator.proc is not None
    pid = scenario.operator.proc.pid
    time.sleep(10)  # let the operator finish starting (imports, watches) before the baseline
    idle = rss_kib(pid)
    docs: list[dict[str, Any]] = [queue("wide", "echo", concurrency=4)]
    for f in range(flows):
        children = [{"name": f"item-{i}", "queue": "wide", "data": {"i": i}}
                    for i in range(nodes - 1)]
        docs.append(flow(f"wide-{f:03d}", [
            {"name": "total", "queue": "wide", "children": children}]))
    scenario.apply(*docs)
    deadline = time.monotonic() + 300
    running = 0
    while time.monotonic() < deadline:
        items = scenario.kube.json("flows", "-n", scenario.namespace).get("items") or []
        running = sum(1 for i in items if (i.get("status") or {}).get("phase") == "Running")
        if running == flows:
            break
        time.sleep(2)
    peak = 0
    samples_end = time.monotonic() + 30
    while time.monotonic() < samples_end:
        peak = max(peak, rss_kib(pid))
        time.sleep(1)
    scenario.kube("patch", "flows", "--all", "-n", scenario.namespace, "--type=merge", "-p",
                  '{"spec":{"cancel":true}}', check=False, timeout=120)
    record("Operator: memory with 100 flows of 100 nodes (issue 4)", table(
        ["flows running", "nodes", "operator RSS before (started, no flow)",
         "operator RSS peak (30 s)"],
        [[f"{running}/{flows}", f"{flows * nodes:,}", f"{idle / 1024:.0f} MiB",
          f"{peak / 1024:.0f} MiB"]]) + """

All flows admitted (graph in Redis, status Running) and dispatching on one queue with
concurrency 4, sampled every second for 30 s; the operator process alone (kopf, the
kubernetes client, watches of Flows, Queues and Jobs).""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["chain", "memory"])
    args = parser.parse_args()
    with bench_world() as world:
        if args.only in (None, "chain"):
            with world.scenario() as scenario:
                chain(scenario, 20)
        if args.only in (None, "memory"):
            with world.scenario() as scenario:
                memory(scenario, 100, 100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
