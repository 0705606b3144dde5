"""kflow side of bench/vs-bullmq: one workload per run, figures as one JSON line on stdout.

Usage: python kflow_bench.py PORT add|process|chain [CONCURRENCY]. The worker is the same
`Worker` class `kflow worker` runs, in this process, with a no-op async handler.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from kflow.api import FlowId
from kflow.engine import Engine, FlowRef
from kflow.graph.dag import CompiledFlow, CompiledNode, CompiledOptions
from kflow.sdk.worker import Worker, WorkerOptions
from kflow.store.connect import connect

NS, QUEUE = "bench", "bench"
WIDTH = 10_000
CHAINS = 1000
CHAIN_LENGTH = 4
ADDERS = 50  # chain flows being added at once, as on the BullMQ side
FAN_OUT_UID = "fan-out-10k"


def fan_out() -> CompiledFlow:
    opts = CompiledOptions()
    names = [f"leaf-{i:05d}" for i in range(WIDTH)]
    nodes = {n: CompiledNode(n, QUEUE, {"i": i}, opts, (), ("sum",)) for i, n in enumerate(names)}
    nodes["sum"] = CompiledNode("sum", QUEUE, {}, opts, tuple(names), ())
    return CompiledFlow(nodes=nodes, roots=("sum",), leaves=tuple(names))


def chain(k: int) -> CompiledFlow:
    opts = CompiledOptions()
    names = [f"step-{s}" for s in range(1, CHAIN_LENGTH)] + ["root"]
    nodes = {}
    for i, n in enumerate(names):
        children = (names[i - 1],) if i else ()
        parents = (names[i + 1],) if i + 1 < len(names) else ()
        nodes[n] = CompiledNode(n, QUEUE, {"k": k}, opts, children, parents)
    return CompiledFlow(nodes=nodes, roots=("root",), leaves=(names[0],))


async def noop(job: Any) -> int:
    return 1


async def until_done(worker: Worker, total: int) -> None:
    while worker.stats["completed"] < total:
        await asyncio.sleep(0.002)


async def main() -> None:
    port, phase = int(sys.argv[1]), sys.argv[2]
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    # The client every kflow process uses: its pool waits for a free connection, and 50
    # adders plus the worker's batched completions want many at once.
    client = await connect(f"redis://127.0.0.1:{port}/0")
    engine = Engine(client)
    options = WorkerOptions(concurrency=concurrency, lock_ms=30_000, poll_max_s=0.02)
    out: dict[str, Any]
    if phase == "add":
        flow = fan_out()  # compiled before the clock starts, as BullMQ's object literal is
        t0 = time.perf_counter()
        await engine.submit(FlowRef(FAN_OUT_UID, NS, "fan-out"), flow)
        out = {"add_s": time.perf_counter() - t0, "nodes": WIDTH + 1}
    elif phase == "process":
        worker = Worker(engine, f"{NS}/{QUEUE}", noop, options)
        t0 = time.perf_counter()
        running = asyncio.create_task(worker.run())
        await until_done(worker, WIDTH + 1)
        s = time.perf_counter() - t0
        worker.stop()
        await running
        phase_now = (await engine.snapshot(FlowId(NS, FAN_OUT_UID))).phase
        out = {"process_s": s, "nodes": WIDTH + 1, "nodes_per_s": (WIDTH + 1) / s,
               "phase": phase_now}
    elif phase == "chain":
        flows = [chain(k) for k in range(CHAINS)]
        worker = Worker(engine, f"{NS}/{QUEUE}", noop, options)
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
        worker.stop()
        await running
        out = {"chain_s": s, "flows": CHAINS, "flows_per_s": CHAINS / s}
    else:
        raise SystemExit(f"unknown phase {phase}")
    await client.aclose()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
