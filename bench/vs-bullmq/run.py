"""kflow vs BullMQ on one private redis-server: add a 10,000-child flow, process it, 1,000 chains.

Run from the repository root: `.venv/bin/python bench/vs-bullmq/run.py [--repeat N]`
(needs `npm ci` in bench/vs-bullmq first). Each workload runs as its own process per side
(`node bullmq_bench.js` / `python kflow_bench.py`) against the same server, flushed in
between; kflow.devkit.pinger, a separate PING client, measures the worst stall other clients
see during each phase. Figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kflow.devkit.pinger import pinging
from kflow.devkit.results import record, table

HERE = Path(__file__).resolve().parent

CONCURRENCY = 100  # jobs in progress at once in the one worker of each side
NOTES = """Where the figures come from:
- Adding the fan-out: kflow writes the graph in chunks of 500 nodes, one short script each,
  so other clients wait at most one chunk; BullMQ adds the whole flow in one MULTI, and every
  other client waits for all 10,001 jobs (the PING stall above).
- Processing the fan-out: the kflow worker takes up to 100 ready nodes per call, reads the
  inputs of a batch in one call per flow, and completes a batch in one script per flow
  (`Engine.complete_batch`), pipelined; BullMQ moves one job per call.
- Chains are kflow's weak case: each flow has one ready node at a time, so batching per
  flow buys nothing, and every node still costs a start, an inputs read and a completion
  in its flow's slot (pipelined across flows on one server), plus the queue steps. Adding
  a flow is four calls (create, nodes, activate, enqueue: separate scripts so a crash can be
  resumed, and so a flow and its queues may live in different cluster slots) where BullMQ
  sends one MULTI. And the worker is Python: client-side work per call costs more than in
  Node. A single add script for small flows would remove three of the four add calls."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly",
                             "no", "--dir", folder], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def redis_cmd(port: int, *args: str) -> None:
    subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True)


def phase(side: str, port: int, name: str) -> dict[str, Any]:
    if side == "bullmq":
        cmd = ["node", str(HERE / "bullmq_bench.js"), str(port), name, str(CONCURRENCY)]
    else:
        cmd = [sys.executable, str(HERE / "kflow_bench.py"), str(port), name, str(CONCURRENCY)]
    with pinging(port) as ping:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=HERE)
    if done.returncode != 0:
        raise RuntimeError(f"{side} {name} failed:\n{done.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["stall_ms"] = ping["max_ms"]
    out["p99_ms"] = ping["p99_ms"]
    return out


def run_side(side: str, port: int) -> dict[str, dict[str, Any]]:
    redis_cmd(port, "FLUSHALL")
    add = phase(side, port, "add")
    process = phase(side, port, "process")
    redis_cmd(port, "FLUSHALL")
    chain = phase(side, port, "chain")
    redis_cmd(port, "FLUSHALL")
    return {"add": add, "process": process, "chain": chain}


def median_of(runs: list[dict[str, dict[str, Any]]], workload: str, key: str) -> float:
    return float(statistics.median(r[workload][key] for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (median kept)")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {"kflow": [], "bullmq": []}
    with tempfile.TemporaryDirectory() as folder:
        proc, port = start_redis(folder)
        try:
            for i in range(args.repeat):
                for side in ("bullmq", "kflow"):  # interleaved: noise hits both alike
                    result = run_side(side, port)
                    runs[side].append(result)
                    print(f"run {i + 1} {side}: {json.dumps(result)}", file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    k, b = runs["kflow"], runs["bullmq"]

    def m(side: list[dict[str, dict[str, Any]]], w: str, key: str) -> float:
        return median_of(side, w, key)

    rows = [
        ["add 1 parent + 10,000 children: time (s)", f"{m(k, 'add', 'add_s'):.2f}",
         f"{m(b, 'add', 'add_s'):.2f}", f"{m(b, 'add', 'add_s') / m(k, 'add', 'add_s'):.2f}x"],
        ["  worst PING stall during the add (ms)", f"{m(k, 'add', 'stall_ms'):.1f}",
         f"{m(b, 'add', 'stall_ms'):.1f}", "—"],
        ["process it end to end (nodes/s)", f"{m(k, 'process', 'nodes_per_s'):,.0f}",
         f"{m(b, 'process', 'nodes_per_s'):,.0f}",
         f"{m(k, 'process', 'nodes_per_s') / m(b, 'process', 'nodes_per_s'):.2f}x"],
        ["  worst PING stall while processing (ms)", f"{m(k, 'process', 'stall_ms'):.1f}",
         f"{m(b, 'process', 'stall_ms'):.1f}", "—"],
        ["1,000 four-job chains, added and run (flows/s)", f"{m(k, 'chain', 'flows_per_s'):,.0f}",
         f"{m(b, 'chain', 'flows_per_s'):,.0f}",
         f"{m(k, 'chain', 'flows_per_s') / m(b, 'chain', 'flows_per_s'):.2f}x"],
        ["  worst PING stall during the chains (ms)", f"{m(k, 'chain', 'stall_ms'):.1f}",
         f"{m(b, 'chain', 'stall_ms'):.1f}", "—"],
    ]
    bullmq_version = json.loads((HERE / "node_modules/bullmq/package.json").read_text())["version"]
    node_version = subprocess.run(["node", "--version"], capture_output=True,
                                  text=True).stdout.strip()
    body = (
        f"Median of {args.repeat} interleaved runs per side, one private redis-server for both, "
        f"flushed between workloads; BullMQ {bullmq_version} on Node {node_version}; one worker "
        f"process per side with {CONCURRENCY} jobs in flight, no-op async processors, parent "
        "and children on one queue. Ratio: kflow speed over BullMQ's (above 1: kflow "
        "faster). Stall: the worst PING round trip of a separate client during the phase.\n\n"
        + table(["workload", "kflow", "BullMQ", "ratio"], rows)
        + "\n\n" + NOTES
        + "\n\nEvery run (JSON, per side and workload):\n\n```\n"
        + "\n".join(f"{side} {json.dumps(r)}" for side in runs for r in runs[side])
        + "\n```\n"
    )
    record("kflow vs BullMQ (bench/vs-bullmq)", body)


if __name__ == "__main__":
    main()
