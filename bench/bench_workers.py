"""`kflow worker` processes on one queue: nodes/s of a 10,000-child fan-out with 1, 2 and 4 workers.

Each run adds the flow to a private redis-server, starts N real `kflow worker` processes
(no-op async handler), and reads the run time from the store's server-clock timestamps
(the queue's first take to the flow's finish), so process start-up is not counted.
Records its section of bench/RESULTS.md. Run: `.venv/bin/python bench/bench_workers.py [--width N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import redis.asyncio as aredis

from kflow.api import FlowId, QueueId
from kflow.devkit.redis import redis_server
from kflow.devkit.results import record, table
from kflow.engine import Engine, FlowRef
from kflow.graph.dag import CompiledFlow, CompiledNode, CompiledOptions

NS, QUEUE = "bench", "work"
HANDLER = f"{Path(__file__).resolve().with_name('_noop_handler.py')}:run"


def fan_out(width: int) -> CompiledFlow:
    opts = CompiledOptions()
    names = [f"leaf-{i:05d}" for i in range(width)]
    nodes = {n: CompiledNode(n, QUEUE, {"i": i}, opts, (), ("sum",)) for i, n in enumerate(names)}
    nodes["sum"] = CompiledNode("sum", QUEUE, {}, opts, tuple(names), ())
    return CompiledFlow(nodes=nodes, roots=("sum",), leaves=tuple(names))


async def one_run(url: str, workers: int, width: int, concurrency: int) -> float:
    client = aredis.Redis.from_url(url)
    await client.flushall()
    engine = Engine(client)
    uid = uuid.uuid4().hex
    await engine.submit(FlowRef(uid, NS, "fan-out"), fan_out(width))
    procs = [subprocess.Popen(
        [sys.executable, "-m", "kflow.sdk.worker", "--queue", f"{NS}/{QUEUE}", "--redis", url,
         "--concurrency", str(concurrency), HANDLER],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    try:
        while (await engine.snapshot(FlowId(NS, uid))).phase == "Running":
            await asyncio.sleep(0.05)
        snap = await engine.snapshot(FlowId(NS, uid))
        first = min(at for at, _ in await engine.queue_takes(QueueId(NS, QUEUE)))
        assert snap.phase == "Succeeded" and snap.finished_at_ms is not None
        return (width + 1) / ((snap.finished_at_ms - first) / 1000)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    rows = []
    with redis_server() as srv:
        for n in (1, 2, 4):
            rate = await one_run(srv.url, n, args.width, args.concurrency)
            print(f"{n} workers: {rate:,.0f} nodes/s", file=sys.stderr)
            rows.append([n, f"{rate:,.0f}"])
    record("worker processes (bench/bench_workers.py)", (
        f"One flow of 1 parent + {args.width:,} children on one queue, served by N `kflow worker` "
        f"processes (concurrency {args.concurrency} each, no-op async handler), nodes/s from "
        "the store's own server-clock times: the queue's first take to the flow's finish, so "
        "process start-up is not counted. On 2 shared cores more processes mostly compete "
        "with Redis and each other for CPU.\n\n" + table(["worker processes", "nodes/s"], rows)))


if __name__ == "__main__":
    asyncio.run(main())
