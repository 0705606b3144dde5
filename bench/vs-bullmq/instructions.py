"""kflow vs BullMQ: Redis's own cost per node counted in instructions, not in CPU seconds.

Run from the repository root: `.venv/bin/python bench/vs-bullmq/instructions.py` (needs
valgrind, `apt-get install valgrind`, and `npm ci` in bench/vs-bullmq). The same workloads
and processes as run.py, against one redis-server running under valgrind's callgrind: the
counters are zeroed when a workload's window opens and read when it closes, so a figure is
the instructions the server executed for that workload alone, divided by its nodes.

Why: Redis CPU per node from INFO cpu swings 20-25% between runs of the same code on this
shared machine (bench/RESULTS.md), more than most changes it is meant to judge. An
instruction count is the same on a busy machine as on an idle one; from run to run it moves
by ~1% on the chains and by up to ~7% on the fan-out, whose batches form differently each
time. It does not see cache misses, which time does, so it complements run.py's figures
rather than replacing them.
Speeds under valgrind mean nothing (the server runs ~50x slower) and are not reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from run import Meter, command, measured

from kflow.cli.redis_server import free_port
from kflow.devkit.results import record, table

SECTION = "Redis instructions per node, kflow vs BullMQ (bench/vs-bullmq/instructions.py)"
START_TIMEOUT_S = 60.0
DUMP_TIMEOUT_S = 60.0
CHAIN_NODES = 4000
FAN_OUT_NODES = 10_001
WORKLOADS = [  # key, label, phases run before the measured one, measured phase, nodes
    ("add", "add 1 parent + 10,000 children", [], "add", FAN_OUT_NODES),
    ("process", "process it, 1 worker, 100 in flight", ["add"], "process", FAN_OUT_NODES),
    ("chain", "1,000 four-job chains, added and run", [], "chain", CHAIN_NODES),
]


class Callgrind:
    """A redis-server under callgrind: zero its counters, dump them, read the last dump."""

    def __init__(self, folder: Path, binary: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.out",
             binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server under valgrind did not start") from None
                time.sleep(0.2)
        self.dumps = 0

    def _control(self, *flags: str) -> None:
        subprocess.run(["callgrind_control", *flags, str(self.proc.pid)], check=True,
                       capture_output=True, timeout=DUMP_TIMEOUT_S)

    def zero(self) -> None:
        self._control("-z")

    def instructions(self) -> int:
        """Instructions since the last zero: callgrind writes them to a new numbered dump."""
        self.dumps += 1
        self._control("-d")
        dump = self.folder / f"cg.out.{self.dumps}"
        deadline = time.monotonic() + DUMP_TIMEOUT_S
        text = ""
        while "\ntotals:" not in text:  # written at the end of the dump
            if time.monotonic() > deadline:
                raise RuntimeError(f"callgrind wrote no {dump.name}")
            time.sleep(0.2)
            text = dump.read_text() if dump.exists() else ""
        for line in text.splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
        raise RuntimeError(f"{dump.name} has no summary line")

    def close(self) -> None:
        self.client.shutdown(nosave=True)
        self.client.close()
        self.proc.wait(timeout=DUMP_TIMEOUT_S)


class InstructionMeter(Meter):
    """run.py's meter (commands per node) with the window's instructions added."""

    def __init__(self, server: Callgrind) -> None:
        super().__init__([server.port])
        self.server = server

    def begin(self) -> None:
        super().begin()
        self.server.zero()

    def end(self, nodes: int) -> dict[str, Any]:
        count = self.server.instructions()
        out = super().end(nodes)
        return {"instructions_per_node": count / nodes, "cmds_per_node": out["cmds_per_node"]}


@contextmanager
def callgrind_server(binary: str, keep: Path | None) -> Iterator[Callgrind]:
    with tempfile.TemporaryDirectory(prefix="kflow-callgrind-") as tmp:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
        server = Callgrind(keep or Path(tmp), binary)
        try:
            yield server
        finally:
            if server.proc.poll() is None:
                server.close()


def run_side(side: str, meter: InstructionMeter, only: set[str]
             ) -> dict[str, dict[str, Any]]:
    port = str(meter.server.port)
    out: dict[str, dict[str, Any]] = {}
    for key, _, before, phase, nodes in WORKLOADS:
        if key not in only:
            continue
        meter.server.client.flushall()
        for earlier in before:
            measured(meter, None, [command(side, port, earlier, 100)], nodes)
        out[key] = measured(meter, None, [command(side, port, phase, 100)], nodes)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-record", action="store_true", help="print, do not record")
    parser.add_argument("--sides", default="bullmq,kflow", help="comma-separated sides")
    parser.add_argument("--workloads", default=",".join(w[0] for w in WORKLOADS),
                        help="comma-separated workloads")
    parser.add_argument("--redis-server", default="redis-server",
                        help="the server binary (one built with symbols, to profile)")
    parser.add_argument("--keep", type=Path, help="keep callgrind's dumps in this folder "
                        "(one per window, in order: for callgrind_annotate)")
    args = parser.parse_args()
    sides, only = args.sides.split(","), set(args.workloads.split(","))
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install valgrind")
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    with callgrind_server(args.redis_server, args.keep) as server:
        meter = InstructionMeter(server)
        for side in sides:
            runs[side] = run_side(side, meter, only)
            print(f"{side}: {json.dumps(runs[side])}", file=sys.stderr)
        meter.close()
    if set(sides) != {"kflow", "bullmq"} or only != {w[0] for w in WORKLOADS}:
        return  # a subset: the figures above, for a probe
    k, b = runs["kflow"], runs["bullmq"]
    rows = [[label, f"{k[key]['instructions_per_node']:,.0f}",
             f"{b[key]['instructions_per_node']:,.0f}",
             f"{k[key]['instructions_per_node'] / b[key]['instructions_per_node']:.2f}",
             f"{k[key]['cmds_per_node']:.1f} / {b[key]['cmds_per_node']:.1f}"]
            for key, label, _, _, _ in WORKLOADS]
    text = table(["workload", "kflow", "BullMQ", "kflow / BullMQ", "commands/node"], rows)
    if args.no_record:
        print(text)
        return
    record(SECTION, (
        "Instructions the redis-server executed per node over each workload's window "
        "(valgrind's callgrind; one run per side, the same server, flushed between "
        "workloads): the cost run.py reads from INFO cpu, counted without the machine's "
        "noise. From run to run a count moves by ~1% on the chains and by up to ~7% on the "
        "fan-out, whose batches form differently each time. Below 1: kflow costs Redis "
        "less. Commands per node as in run.py.\n\n"
        + text + "\n"))


if __name__ == "__main__":
    main()
