"""kflow on a 3-master Redis Cluster vs one Redis: the same workloads, throughput and scaling.

Run from the repository root: `.venv/bin/python bench/vs-bullmq/cluster.py [--repeat N]`.
Starts one private redis-server and a Redis Cluster of real redis-server processes on
loopback (`kflow.devkit.redis.redis_cluster`: --cluster-enabled yes, `redis-cli --cluster
create ... --cluster-replicas 0`), and runs kflow_bench.py against each through the same
driver as run.py (set-up before the go, Redis CPU and commands over the window, summed over
the masters). Interleaved, median of N. Figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from typing import Any

import redis
from run import CONCURRENCY, Meter, command, measured

from kflow.devkit.redis import redis_cluster, redis_server
from kflow.devkit.results import record, table

SECTION = "Redis Cluster scaling (bench/vs-bullmq)"
MASTERS = 3



@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    phase: str  # of kflow_bench.py
    flows: int = 1  # fan-outs of `width` children
    width: int = 10_000

    @property
    def nodes(self) -> int:
        return 4000 if self.phase == "chain" else self.flows * (self.width + 1)


WORKLOADS = [
    Workload("add", "add 1 parent + 10,000 children", "add"),
    Workload("process", "process it, 1 worker", "process"),
    Workload("add10", "add 10 flows of 1 parent + 1,000 children", "add", 10, 1000),
    Workload("process10", "process them, 1 worker", "process", 10, 1000),
    Workload("chain", "1,000 four-job chains, added and run, 1 worker", "chain"),
]

NOTES = """How to read it:
- Every key of a flow carries the flow's hash tag, so a flow lives in one slot, and one
  queue's keys in another. The 10,000-child fan-out is one flow: its whole graph sits on one
  master, so the cluster cannot spread it, whatever the shards. The 10 flows of 1,000
  children and the 1,000 chains hash to different slots and spread over the three masters;
  the queue `bench/bench` (every take and every enqueue) stays on one.
- Redis CPU per node: the sum over the masters; busiest master: its share of that sum. The
  cluster's ceiling is set by its busiest master (nodes / that master's CPU seconds), one
  Redis's by its own CPU (1 / CPU per node); "of ceiling" is the speed over it.
- Scaling: the cluster's nodes/s over one Redis's. Everything (three masters, the worker,
  the adders) shares the same 2 cores here, so these figures say what the cluster costs
  and where the load lands, not what three machines would give. No pinger runs (its PINGs
  would land on one master), so there is no stall column."""


def flush(ports: tuple[int, ...]) -> None:
    for p in ports:
        with redis.Redis(port=p) as r:
            r.flushall()


def run_all(url: str, ports: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    meter = Meter(ports)
    out: dict[str, dict[str, Any]] = {}
    try:
        for w in WORKLOADS:
            if w.phase in ("add", "chain"):
                flush(ports)
            cmd = command("kflow", url, w.phase, CONCURRENCY, flows=w.flows, width=w.width)
            nodes = w.nodes
            figures = measured(meter, None, [cmd], nodes)
            busiest = max(figures["server_cpu_s"])
            figures["busiest_share"] = busiest / max(1e-9, sum(figures["server_cpu_s"]))
            figures["ceiling_nodes_per_s"] = nodes / max(1e-9, busiest)
            figures["of_ceiling"] = figures["nodes_per_s"] / figures["ceiling_nodes_per_s"]
            out[w.key] = figures
        flush(ports)
    finally:
        meter.close()
    return out


def med(runs: list[dict[str, dict[str, Any]]], w: str, key: str) -> float:
    return float(statistics.median(r[w][key] for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per setup (median kept)")
    parser.add_argument("--no-record", action="store_true", help="print, do not record")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {"one": [], "cluster": []}
    with redis_server() as one, redis_cluster(MASTERS) as cluster:
        for i in range(args.repeat):
            for name, url, ports in (("one", one.url, (one.port,)),
                                     ("cluster", cluster.url, cluster.ports)):
                result = run_all(url, ports)
                runs[name].append(result)
                print(f"run {i + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    every = "\n".join(f"{name} {json.dumps(r)}" for name in runs for r in runs[name])
    if args.no_record:
        print(every)
        return
    o, c = runs["one"], runs["cluster"]
    rows = []
    for wl in WORKLOADS:
        w, label = wl.key, wl.label
        speed_o, speed_c = med(o, w, "nodes_per_s"), med(c, w, "nodes_per_s")
        rows.append([
            label, f"{speed_o:,.0f}", f"{speed_c:,.0f}", f"{speed_c / speed_o:.2f}x",
            f"{med(o, w, 'cpu_us_per_node'):.1f} / {med(c, w, 'cpu_us_per_node'):.1f}",
            f"{med(o, w, 'cmds_per_node'):.1f} / {med(c, w, 'cmds_per_node'):.1f}",
            f"{med(c, w, 'busiest_share'):.0%}",
            f"{med(o, w, 'of_ceiling'):.0%} / {med(c, w, 'of_ceiling'):.0%}",
        ])
    body = (
        f"kflow only, median of {args.repeat} interleaved runs: one private redis-server vs a "
        f"Redis Cluster of {MASTERS} masters (no replicas), all on loopback; one worker "
        f"process with {CONCURRENCY} jobs in flight, no-op async handler; 50 adders for the "
        "chains. Speeds in nodes/s; pairs read one Redis / cluster.\n\n"
        + table(["workload", "one Redis", f"{MASTERS}-master cluster", "scaling",
                 "Redis CPU (µs/node)", "Redis commands/node", "busiest master's share",
                 "of ceiling"], rows)
        + "\n\n" + NOTES
        + "\n\nEvery run (JSON):\n\n```\n" + every + "\n```\n"
    )
    record(SECTION, body)


if __name__ == "__main__":
    main()
