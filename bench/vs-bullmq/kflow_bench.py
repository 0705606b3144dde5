"""kflow side of bench/vs-bullmq: one workload per process, driven by run.py or cluster.py.

Usage: python kflow_bench.py TARGET PHASE [options], where TARGET is a port on 127.0.0.1 or a
redis:// URL (a Redis Cluster node works: `kflow.store.connect` finds the cluster), and PHASE:
- add: add `--flows` fan-outs of 1 parent + `--width` children (10,000 and 1 by default);
- process: one worker runs them end to end;
- chain: 1,000 four-node chains added by 50 adders while one worker runs them;
- serve: one worker that reports its completed count (one of several processes run.py starts);
- check: the phase of every fan-out, read after a measurement.

The protocol with the driver (run.py) keeps set-up and checks out of the measured window:
the process prints `ready` once connected, waits for a line on stdin, runs the workload and
prints its figures as one JSON line; then waits for another line, checks what it did, prints
a second JSON line and exits. `serve` prints `{"completed": N}` at most every 5 ms while N
grows, and stops at the next line on stdin. The worker is the same `Worker` class `kflow
worker` runs, with a no-op async handler (or one that sleeps `--io-ms`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

from kflow.api import FlowId
from kflow.engine import Engine, FlowRef
from kflow.graph.dag import CompiledFlow, CompiledNode, CompiledOptions
from kflow.sdk.worker import Worker, WorkerOptions, worker_runner
from kflow.store.connect import connect

NS, QUEUE = "bench", "bench"
CHAINS = 1000
CHAIN_LENGTH = 4
ADDERS = 50  # chain flows being added at once, as on the BullMQ side
PROGRESS_S = 0.005  # how often `serve` reports its count


def fan_out(width: int) -> CompiledFlow:
    opts = CompiledOptions()
    names = [f"leaf-{i:05d}" for i in range(width)]
    nodes = {n: CompiledNode(n, QUEUE, {"i": i}, opts, (), ("sum",)) for i, n in enumerate(names)}
    nodes["sum"] = CompiledNode("sum", QUEUE, {}, opts, tuple(names), ())
    return CompiledFlow(nodes=nodes, roots=("sum",), leaves=tuple(names))


def fan_out_uids(flows: int, width: int) -> list[str]:
    return [f"fan-out-{width}-{i}" for i in range(flows)]


def chain(k: int) -> CompiledFlow:
    opts = CompiledOptions()
    names = [f"step-{s}" for s in range(1, CHAIN_LENGTH)] + ["root"]
    nodes = {}
    for i, n in enumerate(names):
        children = (names[i - 1],) if i else ()
        parents = (names[i + 1],) if i + 1 < len(names) else ()
        nodes[n] = CompiledNode(n, QUEUE, {"k": k}, opts, children, parents)
    return CompiledFlow(nodes=nodes, roots=("root",), leaves=(names[0],))


def handler(io_ms: float) -> Any:
    async def noop(job: Any) -> int:
        return 1

    async def io(job: Any) -> int:
        await asyncio.sleep(io_ms / 1000)
        return 1

    return io if io_ms else noop


async def line() -> str:
    """The next line the driver sends (empty at end of input)."""
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def say(obj: Any) -> None:
    print(obj if isinstance(obj, str) else json.dumps(obj), flush=True)


async def until_done(worker: Worker, total: int) -> None:
    while worker.stats["completed"] < total:
        await asyncio.sleep(0.002)


async def phases(engine: Engine, uids: list[str]) -> list[str]:
    return [str((await engine.snapshot(FlowId(NS, uid))).phase) for uid in uids]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("phase", choices=["add", "process", "chain", "serve", "check"])
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--flows", type=int, default=1)
    parser.add_argument("--width", type=int, default=10_000)
    parser.add_argument("--io-ms", type=float, default=0.0)
    args = parser.parse_args()
    url = f"redis://127.0.0.1:{args.target}/0" if args.target.isdigit() else args.target
    # The client every kflow process uses: its pool waits for a free connection, and 50
    # adders plus the worker's batched completions want many at once.
    client = await connect(url)
    # As `kflow worker` builds it: exit handlers are the operator's (start_exits=False).
    engine = Engine(client, start_exits=False)
    options = WorkerOptions(concurrency=args.concurrency, lock_ms=30_000, poll_max_s=0.02)
    uids = fan_out_uids(args.flows, args.width)
    nodes = args.flows * (args.width + 1)
    worker = Worker(engine, f"{NS}/{QUEUE}", handler(args.io_ms), options)
    out: dict[str, Any]
    if args.phase == "add":
        flow = fan_out(args.width)  # compiled before the clock starts, as BullMQ's literal is
        say("ready")
        await line()
        t0 = time.perf_counter()
        await asyncio.gather(*(engine.submit(FlowRef(uid, NS, "fan-out"), flow) for uid in uids))
        s = time.perf_counter() - t0
        out = {"add_s": s, "nodes": nodes, "nodes_per_s": nodes / s}
    elif args.phase == "process":
        say("ready")
        await line()
        t0 = time.perf_counter()
        running = asyncio.create_task(worker.run())
        await until_done(worker, nodes)
        s = time.perf_counter() - t0
        out = {"process_s": s, "nodes": nodes, "nodes_per_s": nodes / s}
        say(out)
        await line()
        worker.stop()
        await running
        out = {"phases": sorted(set(await phases(engine, uids)))}
    elif args.phase == "chain":
        flows = [chain(k) for k in range(CHAINS)]
        say("ready")
        await line()
        t0 = time.perf_counter()
        running = asyncio.create_task(worker.run())
        pending = iter(range(CHAINS))

        async def adder() -> None:
            for k in pending:
                await engine.submit(FlowRef(f"chain-{k}-{uuid.uuid4().hex[:6]}", NS, "chain"),
                                    flows[k])

        await asyncio.gather(*(adder() for _ in range(ADDERS)))
        await until_done(worker, CHAINS * CHAIN_LENGTH)
        s = time.perf_counter() - t0
        out = {"chain_s": s, "flows": CHAINS, "flows_per_s": CHAINS / s,
               "nodes": CHAINS * CHAIN_LENGTH, "nodes_per_s": CHAINS * CHAIN_LENGTH / s}
        say(out)
        await line()
        worker.stop()
        await running
        out = {}
    elif args.phase == "serve":
        say("ready")
        await line()
        running = asyncio.create_task(worker.run())
        stop = asyncio.create_task(line())
        told = -1
        while not stop.done():
            if worker.stats["completed"] != told:
                told = worker.stats["completed"]
                say({"completed": told})
            await asyncio.wait([stop], timeout=PROGRESS_S)
        worker.stop()
        await running
        out = {"completed": worker.stats["completed"]}
    else:  # check
        out = {"phases": sorted(set(await phases(engine, uids)))}
    say(out)
    if args.phase == "add":
        await line()
        out = {}
        say(out)
    await client.aclose()


if __name__ == "__main__":
    # As `kflow worker` runs: its collector settings, and uvloop with the "fast" extra.
    with worker_runner() as runner:
        runner.run(main())
