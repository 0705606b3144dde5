"""kflow vs BullMQ on one private redis-server: speed, Redis's own cost and the ceiling it sets.

Run from the repository root: `.venv/bin/python bench/vs-bullmq/run.py [--repeat N]`
(needs `npm ci` in bench/vs-bullmq first). Each workload runs as its own process per side
(`node bullmq_bench.js` / `python kflow_bench.py`) against the same server, flushed in
between. The processes connect and set up first, then wait for a go on stdin: the measured
window is the workload alone. Around that window this script reads the server's CPU time
(INFO cpu) and its command counts (CONFIG RESETSTAT, INFO commandstats), and
kflow.devkit.pinger, a separate PING client, measures the worst stall other clients see.
Figures go to bench/RESULTS.md; `--no-record` only prints them.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, Any, cast

import redis

from kflow.devkit.pinger import pinging
from kflow.devkit.redis import redis_server
from kflow.devkit.results import record, table

HERE = Path(__file__).resolve().parent
SECTION = "kflow vs BullMQ (bench/vs-bullmq)"

CONCURRENCY = 100  # jobs in progress at once in the one worker of each side
WORKERS = 4  # processes of the multi-process workload, CONCURRENCY // WORKERS jobs each
IO_MS = 10  # simulated I/O per node in the I/O workload
IO_CONCURRENCY = 200
FAN_OUT_NODES = 10_001
PHASE_TIMEOUT_S = 300.0
TOP_COMMANDS = 10  # kept per window: the most called and the most time-consuming
# Commands this harness sends itself (the pinger's PINGs, INFO, CONFIG RESETSTAT; Redis 7
# names a subcommand "config|resetstat"): left out of the per-node counts.
OWN_COMMANDS = {"ping", "info", "config"}

NOTES = """Where the figures come from:
- Speed: nodes/s over the measured window (adding: nodes written per second; chains: the
  4,000 nodes of the 1,000 flows, added and run). Processes start, connect and build their
  flows before the window opens.
- Redis CPU per node: the server's `used_cpu_sys + used_cpu_user` (INFO cpu) over the
  window, less the pinger's share (its PINGs in the window times the CPU one PING costs an
  idle server, calibrated at start), divided by the workload's nodes. Commands per node: the
  calls in INFO commandstats over the window (CONFIG RESETSTAT at its start), which count the
  commands a script runs as well as the EVALSHA itself; PING, INFO and CONFIG are left out.
- Ceiling: the nodes/s one Redis could serve if this cost were all it did (1 / CPU per node);
  "of ceiling" is the measured speed over it. 100% means Redis itself is the limit.
- 4 workers: 4 OS processes per side, each one worker with 25 jobs in flight (100 in all, as
  the one-worker row); the window runs from the go sent to all four to the moment their
  reported completions (every 5 ms) add up to 10,001.
- 10 ms I/O: one worker per side, 200 jobs in flight, each handler sleeping 10 ms
  (asyncio.sleep / setTimeout): 20,000 nodes/s at most.
- Adding the fan-out: kflow writes the graph in bounded chunks, so other clients wait at most
  one chunk; BullMQ adds the whole flow in one MULTI, and every other client waits for all
  10,001 jobs (the PING stall)."""


# -- Redis's own cost --------------------------------------------------------------------

def info_of(client: redis.Redis, section: str) -> dict[str, Any]:
    return cast(dict[str, Any], client.info(section))


def cpu_seconds(clients: Sequence[redis.Redis]) -> dict[str, float]:
    """The servers' CPU time so far, summed: total and main thread (Redis 7 reports both)."""
    total = main = 0.0
    for c in clients:
        info = info_of(c, "cpu")
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        main += float(info.get("used_cpu_sys_main_thread", 0.0)) + float(
            info.get("used_cpu_user_main_thread", 0.0))
    return {"total": total, "main": main}


def io_counts(clients: Sequence[redis.Redis]) -> dict[str, int]:
    """Socket reads and writes the servers have done so far (Redis 7's INFO stats)."""
    out = {"reads": 0, "writes": 0}
    for c in clients:
        stats = info_of(c, "stats")
        out["reads"] += int(stats.get("total_reads_processed", 0))
        out["writes"] += int(stats.get("total_writes_processed", 0))
    return out


def command_stats(clients: Sequence[redis.Redis]) -> dict[str, dict[str, int]]:
    """Calls and µs per command since the last CONFIG RESETSTAT, summed over the servers."""
    out: dict[str, dict[str, int]] = {}
    for c in clients:
        for key, stats in info_of(c, "commandstats").items():
            name = key.removeprefix("cmdstat_")
            mine = out.setdefault(name, {"calls": 0, "usec": 0})
            mine["calls"] += int(stats["calls"])
            mine["usec"] += int(stats["usec"])
    return out


class Meter:
    """Redis CPU and commands over one measured window, across one or more servers."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.clients = [redis.Redis(port=p) for p in ports]
        self.ping_cpu_s = 0.0  # CPU one PING of the pinger costs the server (calibrate)
        self.start: dict[str, float] = {}
        self.start_io: dict[str, int] = {}
        self.start_per_server: list[float] = []

    def calibrate(self, port: int) -> None:
        """The server CPU one pinger PING costs: pinging an idle server for a second."""
        with pinging(port):
            self.begin()
            time.sleep(1.0)
            cpu = cpu_seconds(self.clients)["total"] - self.start["total"]
            pings = command_stats(self.clients).get("ping", {}).get("calls", 0)
        self.ping_cpu_s = cpu / max(1, pings)

    def begin(self) -> None:
        for c in self.clients:
            c.config_resetstat()
        self.start_per_server = [cpu_seconds([c])["total"] for c in self.clients]
        self.start = cpu_seconds(self.clients)
        self.start_io = io_counts(self.clients)

    def end(self, nodes: int) -> dict[str, Any]:
        now = cpu_seconds(self.clients)
        io = io_counts(self.clients)
        per_server = [cpu_seconds([c])["total"] - s
                      for c, s in zip(self.clients, self.start_per_server, strict=True)]
        stats = command_stats(self.clients)
        pings = stats.get("ping", {}).get("calls", 0)
        raw = now["total"] - self.start["total"]
        cpu = max(0.0, raw - pings * self.ping_cpu_s)
        theirs = {k: v for k, v in stats.items() if k.split("|")[0] not in OWN_COMMANDS}
        calls = sum(v["calls"] for v in theirs.values())
        by_calls = sorted(theirs, key=lambda k: -theirs[k]["calls"])[:TOP_COMMANDS]
        by_time = sorted(theirs, key=lambda k: -theirs[k]["usec"])[:TOP_COMMANDS]
        top = [(k, theirs[k]) for k in dict.fromkeys(by_calls + by_time)]
        return {
            "raw_cpu_s": raw, "main_thread_cpu_s": now["main"] - self.start["main"],
            "pings": pings, "cpu_s": cpu, "cpu_us_per_node": cpu / nodes * 1e6,
            "server_cpu_s": per_server,
            "commands": dict(top),
            "cmds_per_node": calls / nodes,
            # socket reads and writes per node: how well the clients' commands are batched
            "reads_per_node": (io["reads"] - self.start_io["reads"]) / nodes,
            "writes_per_node": (io["writes"] - self.start_io["writes"]) / nodes,
        }

    def close(self) -> None:
        for c in self.clients:
            c.close()


def with_ceiling(out: dict[str, Any]) -> dict[str, Any]:
    """Add the ceiling (1 / Redis CPU per node) and the speed as a fraction of it."""
    if out.get("cpu_us_per_node"):
        out["ceiling_nodes_per_s"] = 1e6 / out["cpu_us_per_node"]
        out["of_ceiling"] = out["nodes_per_s"] / out["ceiling_nodes_per_s"]
    return out


# -- the phase processes -----------------------------------------------------------------

class Proc:
    """One benchmark process: lines to its stdin, its stdout lines through a queue."""

    def __init__(self, cmd: list[str], lines: queue.Queue[tuple[int, str]], tag: int) -> None:
        self.cmd = cmd
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1, cwd=HERE)
        self.lines = lines
        self.tag = tag
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_err(self) -> None:
        assert self.p.stderr is not None
        for text in self.p.stderr:
            self.err.append(text)

    def _read(self) -> None:
        assert self.p.stdout is not None
        for text in self.p.stdout:
            self.lines.put((self.tag, text.strip()))
        self.lines.put((self.tag, ""))  # end of output

    def send(self, text: str = "") -> None:
        stdin: IO[str] | None = self.p.stdin
        assert stdin is not None
        stdin.write(text + "\n")
        stdin.flush()

    def failure(self, what: str) -> RuntimeError:
        self.p.kill()
        self.p.wait()
        tail = "".join(self.err)[-3000:]
        return RuntimeError(f"{' '.join(self.cmd[-4:])}: {what}\n{tail}")

    def finish(self) -> None:
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise self.failure("did not exit") from None
        if self.p.returncode:
            raise self.failure(f"exit code {self.p.returncode}")


def next_line(lines: queue.Queue[tuple[int, str]], procs: Sequence[Proc]) -> tuple[int, str]:
    try:
        tag, text = lines.get(timeout=PHASE_TIMEOUT_S)
    except queue.Empty:
        raise procs[0].failure(f"no output for {PHASE_TIMEOUT_S:.0f} s") from None
    if not text:
        procs[tag].finish()
        raise procs[tag].failure("ended early")
    return tag, text


def command(side: str, target: str, name: str, concurrency: int, io_ms: float = 0,
            flows: int = 1, width: int = 10_000) -> list[str]:
    if side == "bullmq":
        return ["node", str(HERE / "bullmq_bench.js"), target, name, str(concurrency),
                str(io_ms)]
    return [sys.executable, str(HERE / "kflow_bench.py"), target, name,
            f"--concurrency={concurrency}", f"--io-ms={io_ms}", f"--flows={flows}",
            f"--width={width}"]


def stall_meter(port: int | None) -> AbstractContextManager[dict[str, Any]]:
    return pinging(port) if port is not None else nullcontext({})


def measured(meter: Meter, ping_port: int | None, cmds: list[list[str]], nodes: int,
             until: Callable[[int, dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Run processes through ready → go → figures → done, metering the window between.

    One process: its own figures line ends the window. Several (`until` given): they report
    progress lines, and the window ends when `until(tag, line)` says so; then each is told
    to stop.
    """
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    procs = [Proc(cmd, lines, i) for i, cmd in enumerate(cmds)]
    try:
        for _ in procs:
            _, text = next_line(lines, procs)
            if text != "ready":
                raise procs[0].failure(f"expected 'ready', got {text!r}")
        with stall_meter(ping_port) as stall:
            meter.begin()
            t0 = time.perf_counter()
            for p in procs:
                p.send()
            out: dict[str, Any] = {}
            while True:
                tag, text = next_line(lines, procs)
                figures = json.loads(text)
                if until is None:
                    out = figures
                    break
                if until(tag, figures):
                    s = time.perf_counter() - t0
                    out = {"process_s": s, "nodes": nodes, "nodes_per_s": nodes / s}
                    break
            out |= meter.end(nodes)
        out["stall_ms"] = stall.get("max_ms")
        out["p99_ms"] = stall.get("p99_ms")
        for p in procs:
            p.send()
        for _ in procs:  # drain to each one's last line
            while True:
                tag, text = lines.get(timeout=PHASE_TIMEOUT_S)
                if not text:
                    procs[tag].finish()
                    break
                last = json.loads(text)
                if "completed" not in last:
                    out |= last
        return with_ceiling(out)
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()


def run_once(side: str, port: int, meter: Meter, phase: str,
             concurrency: int = CONCURRENCY, io_ms: float = 0) -> dict[str, Any]:
    """One process of `side` runs `phase` on the fan-out (or the chains)."""
    nodes = 4000 if phase == "chain" else FAN_OUT_NODES
    cmd = command(side, str(port), phase, concurrency, io_ms)
    return measured(meter, port, [cmd], nodes)


def check(side: str, target: str) -> dict[str, Any]:
    done = subprocess.run(command(side, target, "check", 1), capture_output=True, text=True,
                          timeout=120, cwd=HERE)
    if done.returncode:
        raise RuntimeError(f"{side} check failed:\n{done.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def many_workers(side: str, port: int, meter: Meter) -> dict[str, Any]:
    """The fan-out served by WORKERS processes of the side, CONCURRENCY // WORKERS each."""
    counts = [0] * WORKERS

    def all_done(tag: int, figures: dict[str, Any]) -> bool:
        counts[tag] = int(figures["completed"])
        return sum(counts) >= FAN_OUT_NODES

    cmds = [command(side, str(port), "serve", CONCURRENCY // WORKERS) for _ in range(WORKERS)]
    out = measured(meter, port, cmds, FAN_OUT_NODES, all_done)
    out["check"] = check(side, str(port))
    return out


def run_side(side: str, port: int, meter: Meter) -> dict[str, dict[str, Any]]:
    r = redis.Redis(port=port)
    out: dict[str, dict[str, Any]] = {}
    r.flushall()
    out["add"] = run_once(side, port, meter, "add")
    out["process"] = run_once(side, port, meter, "process")
    r.flushall()
    run_once(side, port, meter, "add")  # the same flow again, for the next workload
    out["workers4"] = many_workers(side, port, meter)
    r.flushall()
    run_once(side, port, meter, "add")
    out["io"] = run_once(side, port, meter, "process", IO_CONCURRENCY, IO_MS)
    r.flushall()
    out["chain"] = run_once(side, port, meter, "chain")
    r.flushall()
    r.close()
    return out


# -- the table ---------------------------------------------------------------------------

WORKLOADS = [  # key, label, speed unit, speed key
    ("add", "add 1 parent + 10,000 children", "nodes/s", "nodes_per_s"),
    ("process", "process it, 1 worker, 100 in flight", "nodes/s", "nodes_per_s"),
    ("workers4", "process it, 4 worker processes, 25 in flight each", "nodes/s", "nodes_per_s"),
    ("io", "process it, 10 ms I/O per node, 1 worker, 200 in flight", "nodes/s", "nodes_per_s"),
    ("chain", "1,000 four-job chains, added and run", "flows/s", "flows_per_s"),
]


def med(runs: list[dict[str, dict[str, Any]]], w: str, key: str) -> float:
    values = [r[w][key] for r in runs if r[w].get(key) is not None]
    return float(statistics.median(values)) if values else float("nan")


def pair(k: float, b: float, fmt: str) -> str:
    return f"{k:{fmt}} / {b:{fmt}}"


def rows_of(k: list[dict[str, dict[str, Any]]], b: list[dict[str, dict[str, Any]]]
            ) -> list[list[str]]:
    rows = []
    for w, label, unit, key in WORKLOADS:
        ks, bs = med(k, w, key), med(b, w, key)
        rows.append([
            f"{label} ({unit})", f"{ks:,.0f}", f"{bs:,.0f}", f"{ks / bs:.2f}x",
            pair(med(k, w, "stall_ms"), med(b, w, "stall_ms"), ".1f"),
            pair(med(k, w, "cpu_us_per_node"), med(b, w, "cpu_us_per_node"), ".1f"),
            pair(med(k, w, "cmds_per_node"), med(b, w, "cmds_per_node"), ".1f"),
            f"{med(k, w, 'of_ceiling'):.0%} / {med(b, w, 'of_ceiling'):.0%}",
        ])
    return rows


def top_commands(runs: list[dict[str, dict[str, Any]]], w: str) -> str:
    """The median run's (by CPU per node) most called commands, as calls per node, the time
    its scripts took (EVALSHA's and FCALL's usec: the commands they run included) and the
    server's socket reads per node (INFO stats total_reads_processed: fewer means better
    pipelining)."""
    ordered = sorted(runs, key=lambda r: r[w]["cpu_us_per_node"])
    run = ordered[len(ordered) // 2][w]
    nodes = run["nodes"]
    commands: dict[str, dict[str, int]] = run["commands"]
    by_calls = sorted(commands, key=lambda k: -commands[k]["calls"])[:TOP_COMMANDS]
    text = ", ".join(f"{name} {commands[name]['calls'] / nodes:.2g}" for name in by_calls)
    scripts = sum(commands.get(c, {"usec": 0})["usec"] for c in ("evalsha", "fcall")) / nodes
    text += f" (scripts: {scripts:.1f} µs/node)" if scripts else ""
    return text + f"; {run['reads_per_node']:.2f} socket reads/node"


def iter_runs(runs: dict[str, list[dict[str, dict[str, Any]]]]) -> Iterator[str]:
    for side, side_runs in runs.items():
        for r in side_runs:
            yield f"{side} {json.dumps(r)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (median kept)")
    parser.add_argument("--sides", default="bullmq,kflow", help="comma-separated sides")
    parser.add_argument("--no-record", action="store_true", help="print, do not record")
    args = parser.parse_args()
    sides = args.sides.split(",")
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {s: [] for s in sides}
    with redis_server() as server:
        meter = Meter([server.port])
        meter.calibrate(server.port)
        print(f"pinger: {meter.ping_cpu_s * 1e6:.1f} µs of server CPU per PING",
              file=sys.stderr)
        for i in range(args.repeat):
            for side in sides:  # interleaved: noise hits both alike
                result = run_side(side, server.port, meter)
                runs[side].append(result)
                print(f"run {i + 1} {side}: {json.dumps(result)}", file=sys.stderr)
        meter.close()
    if args.no_record or set(sides) != {"kflow", "bullmq"}:
        print("\n".join(iter_runs(runs)))
        return
    k, b = runs["kflow"], runs["bullmq"]
    bullmq_version = json.loads((HERE / "node_modules/bullmq/package.json").read_text())["version"]
    node_version = subprocess.run(["node", "--version"], capture_output=True,
                                  text=True).stdout.strip()
    costs = "\n".join(f"- {label}: kflow {top_commands(k, w)}; BullMQ {top_commands(b, w)}"
                      for w, label, _, _ in WORKLOADS)
    body = (
        f"Median of {args.repeat} interleaved runs per side, one private redis-server for both, "
        f"flushed between workloads; BullMQ {bullmq_version} on Node {node_version}; no-op "
        "async processors unless said, parent and children on one queue. Ratio: kflow speed "
        "over BullMQ's (above 1: kflow faster). Pairs read kflow / BullMQ. Stall: the worst "
        "PING round trip of a separate client during the window. The pinger costs the server "
        f"{meter.ping_cpu_s * 1e6:.0f} µs of CPU per PING (subtracted below).\n\n"
        + table(["workload", "kflow", "BullMQ", "ratio", "worst stall (ms)",
                 "Redis CPU (µs/node)", "Redis commands/node", "of ceiling"], rows_of(k, b))
        + "\n\n" + NOTES
        + "\n\nThe most called commands (calls per node, median run; scripts' inner commands "
        "included):\n\n" + costs
        + "\n\nEvery run (JSON, per side and workload):\n\n```\n"
        + "\n".join(iter_runs(runs)) + "\n```\n"
    )
    record(SECTION, body)


if __name__ == "__main__":
    main()
