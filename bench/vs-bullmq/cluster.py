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
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from run import CONCURRENCY, Meter, command, measured

from kflow.cli.redis_server import free_port, start, stop
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
- Socket reads per node (INFO stats total_reads_processed): how many commands reach the
  server per read, i.e. how well the client's commands are pipelined; each read costs the
  server a system call and an event-loop turn.
- Scaling: the 3-master cluster's nodes/s over one Redis's, and over the 1-master
  cluster's: the first is what a user moving to a cluster sees; the second separates the
  spreading over masters from the cost of cluster mode itself (the cluster client, the slot
  checks). Everything (the masters, the worker, the adders) shares the same 2 cores here,
  so these figures say what the cluster costs and where the load lands, not what three
  machines would give. No pinger runs (its PINGs would land on one master), so there is
  no stall column.
- Chains on a cluster: one Redis takes a small flow's add and its leaves' enqueue in one
  pipeline; a cluster sends them apart (they go to different masters in no set order). A
  batch of calls (starts, completions, several callers' adds) goes as a cluster pipeline,
  one per master: ~0.7 socket reads per node against ~0.2 on one Redis. Before that, each
  call went on its own (2.65 reads per node, 0.41x of one Redis), and before kflow's
  client gave FCALL the slot of its keys, redis-py asked a master for them (COMMAND
  GETKEYS) before every call (7.76 reads per node, 0.24x), both 2026-12-01."""


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


@contextmanager
def one_master_cluster() -> Iterator[tuple[str, tuple[int, ...]]]:
    """A Redis Cluster of one master holding every slot: cluster mode without sharding
    (`redis-cli --cluster create` wants three masters, so the slots are assigned by hand)."""
    with tempfile.TemporaryDirectory(prefix="kflow-rcluster1-") as tmp:
        port = free_port()
        procs = [start(port, Path(tmp), "--cluster-enabled", "yes",
                       "--cluster-config-file", "nodes.conf")]
        try:
            with redis.Redis(port=port) as r:
                r.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                deadline = time.monotonic() + 30
                while b"cluster_state:ok" not in r.execute_command("CLUSTER", "INFO"):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the one-master cluster did not reach state ok")
                    time.sleep(0.1)
            yield f"redis://127.0.0.1:{port}/0", (port,)
        finally:
            stop(procs)


SETUPS = ("one", "cluster1", f"cluster{MASTERS}")


def med(runs: list[dict[str, dict[str, Any]]], w: str, key: str) -> float:
    return float(statistics.median(r[w][key] for r in runs))


def trio(runs: dict[str, list[dict[str, dict[str, Any]]]], w: str, key: str, fmt: str) -> str:
    return " / ".join(f"{med(runs[s], w, key):{fmt}}" for s in SETUPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per setup (median kept)")
    parser.add_argument("--no-record", action="store_true", help="print, do not record")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {s: [] for s in SETUPS}
    with (redis_server() as one, one_master_cluster() as (url1, ports1),
          redis_cluster(MASTERS) as cluster):
        targets = {"one": (one.url, (one.port,)), "cluster1": (url1, ports1),
                   SETUPS[2]: (cluster.url, cluster.ports)}
        for i in range(args.repeat):
            for name in SETUPS:  # interleaved: noise hits all alike
                result = run_all(*targets[name])
                runs[name].append(result)
                print(f"run {i + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    every = "\n".join(f"{name} {json.dumps(r)}" for name in runs for r in runs[name])
    if args.no_record:
        print(every)
        return
    rows = []
    for wl in WORKLOADS:
        w = wl.key
        one_s, one_c = med(runs["one"], w, "nodes_per_s"), med(runs["cluster1"], w, "nodes_per_s")
        many = med(runs[SETUPS[2]], w, "nodes_per_s")
        rows.append([
            wl.label, f"{one_s:,.0f}", f"{one_c:,.0f}", f"{many:,.0f}",
            f"{many / one_s:.2f}x", f"{many / one_c:.2f}x",
            trio(runs, w, "cpu_us_per_node", ".1f"), trio(runs, w, "cmds_per_node", ".1f"),
            trio(runs, w, "reads_per_node", ".2f"),
            f"{med(runs[SETUPS[2]], w, 'busiest_share'):.0%}",
            f"{med(runs['one'], w, 'of_ceiling'):.0%} / "
            f"{med(runs[SETUPS[2]], w, 'of_ceiling'):.0%}",
        ])
    body = (
        f"kflow only, median of {args.repeat} interleaved runs on three setups, all on "
        f"loopback: one private redis-server; a Redis Cluster of one master (every slot: "
        f"cluster mode without sharding); a Redis Cluster of {MASTERS} masters (no replicas). "
        f"One worker process with {CONCURRENCY} jobs in flight, no-op async handler; 50 "
        "adders for the chains. Speeds in nodes/s; triples read one Redis / 1-master "
        f"cluster / {MASTERS}-master cluster.\n\n"
        + table(["workload", "one Redis", "1-master cluster", f"{MASTERS}-master cluster",
                 "scaling vs one Redis", "scaling vs 1 master", "Redis CPU (µs/node)",
                 "Redis commands/node", "socket reads/node", f"busiest of {MASTERS} masters",
                 f"of ceiling (one / {MASTERS} masters)"], rows)
        + "\n\n" + NOTES
        + "\n\nEvery run (JSON):\n\n```\n" + every + "\n```\n"
    )
    record(SECTION, body)


if __name__ == "__main__":
    main()
