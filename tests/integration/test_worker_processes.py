"""`kflow worker` as real processes on real Redis: fan-out, killed worker, rate limit, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from kflow.api import FlowId
from kflow.engine import Engine, QueueConfig
from tests.integration.engine_kit import build, new_ref, node, qid

pytestmark = pytest.mark.redis

HANDLER = f"{Path(__file__).with_name('worker_handlers.py')}:run"
WAIT_S = 120.0  # only a bound on a hang; nothing here asserts on elapsed time


@pytest.fixture
async def engine(redis_srv: Any) -> AsyncIterator[Engine]:
    client = aredis.Redis.from_url(redis_srv.url)
    await client.flushall()
    try:
        yield Engine(client)
    finally:
        await client.aclose()


class Workers:
    """Starts `kflow worker` processes and stops what is left of them at the end."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url = url
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, queue: str = "work", *args: str, hang: bool = False) -> subprocess.Popen[bytes]:
        env = {**os.environ, "KFLOW_TEST_REDIS_URL": self.url,
               "KFLOW_TEST_HANG": "1" if hang else "0"}
        log = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "kflow.sdk.worker", "--queue", qid(queue), "--redis", self.url,
             *args, HANDLER], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text()[-2000:]
                         for p in sorted(self.logs.glob("worker-*.log")))


@pytest.fixture
def workers(redis_srv: Any, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(redis_srv.url, tmp_path)
    try:
        yield pool
    finally:
        for proc in pool.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def until(check: Callable[[], Any], what: str, workers: Workers) -> Any:
    """Poll `check` (async) until it returns a true value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while loop.time() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}\n{workers.tails()}")


async def runs(engine: Engine, uid: str) -> Counter[str]:
    raw = await engine.store.redis.lrange("test:runs", 0, -1)
    return Counter(r.decode().split("|")[1] for r in raw if r.decode().startswith(uid + "|"))


async def finished(engine: Engine, uid: FlowId) -> str | None:
    phase = (await engine.snapshot(uid)).phase
    return phase if phase not in ("Running", "Pending") else None


def fan_out(width: int, **data: Any) -> Any:
    leaves = [node(f"leaf-{i:04d}", data={"value": i, **data}) for i in range(width)]
    return build(node("sum", *(n.name for n in leaves), queue="work"), *leaves)


async def test_fan_out_of_1000_on_4_workers_runs_each_node_once(
        engine: Engine, workers: Workers) -> None:
    ref = new_ref()
    await engine.submit(ref, fan_out(1000))
    for _ in range(4):
        workers.start("work", "--concurrency", "16")
    assert await until(lambda: finished(engine, ref.id), "the flow to finish",
                       workers) == "Succeeded"
    counted = await runs(engine, ref.uid)
    assert len(counted) == 1001 and set(counted.values()) == {1}
    infos = await engine.node_infos(ref.id)
    assert infos["sum"].result == sum(range(1000))
    assert {i.attempt for i in infos.values()} == {1}
    raw = await engine.store.redis.lrange("test:runs", 0, -1)
    assert len({r.decode().split("|")[3] for r in raw}) > 1  # the work was shared
    assert await engine.queue_depth(qid()) == (0, 0, 0)


async def test_killed_worker_nodes_go_to_another_after_the_lock(
        engine: Engine, workers: Workers) -> None:
    ref = new_ref()
    await engine.submit(ref, fan_out(20))
    doomed = workers.start("work", "--concurrency", "5", "--lock-ms", "1000", hang=True)

    async def holding() -> bool:
        # Held by the queue (take) and started on the flow (start): two calls, and the
        # worker may have two takes out at once.
        started = [e for e in await engine.events(ref.id) if e["type"] == "started"]
        return (await engine.queue_depth(qid()))[1] == 5 and len(started) == 5

    await until(holding, "the doomed worker to hold 5 nodes", workers)
    held = {e["node"] for e in await engine.events(ref.id) if e["type"] == "started"}
    assert len(held) == 5
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    # The taker holds its own nodes on a long lock (a slow renewal on a busy machine must
    # not stall them too) and sweeps for expired ones often.
    workers.start("work", "--concurrency", "4", "--lock-ms", "10000",
                  "--stalled-interval-ms", "300")
    assert await until(lambda: finished(engine, ref.id), "the flow to finish",
                       workers) == "Succeeded"
    events = await engine.events(ref.id)
    assert {e["node"] for e in events if e["type"] == "stalled"} == held
    completed = Counter(e["node"] for e in events if e["type"] == "completed")
    assert len(completed) == 21 and set(completed.values()) == {1}  # no result twice
    assert set((await runs(engine, ref.uid)).values()) == {1}
    infos = await engine.node_infos(ref.id)
    assert infos["sum"].result == sum(range(20))
    assert {i.attempt for i in infos.values()} == {1}  # a stall does not spend an attempt


async def test_rate_limit_holds_across_three_workers(engine: Engine, workers: Workers) -> None:
    await engine.configure_queue(qid("limited"), QueueConfig(rate_max=50, rate_per_ms=1000))
    ref = new_ref()
    await engine.submit(ref, build(*(node(f"n-{i:03d}", queue="limited") for i in range(330))))
    for _ in range(3):
        workers.start("limited", "--concurrency", "20")

    async def started() -> list[int]:
        # The queue's own record of starts: server-clock ms of each take, one per node.
        takes = await engine.queue_takes(qid("limited"))
        stamps = [at for at, n in takes for _ in range(n)]
        return stamps if len(stamps) >= 300 else []

    stamps = await until(started, "300 starts", workers)
    first = stamps[0]
    in_five = sum(1 for s in stamps if s < first + 5000)
    assert 225 <= in_five <= 275, in_five  # 50/s over 5 s, within 10%
    # And no 1 s window, anywhere, holds more than the limit.
    worst = max(sum(1 for s in stamps[i:i + 60] if s < start + 1000)
                for i, start in enumerate(stamps))
    assert worst <= 50, worst
    started_events = [e for e in await engine.events(ref.id, count=2000)
                      if e["type"] == "started"]
    assert len(started_events) >= len(stamps)  # every take became a start of the flow
    owners = {e["owner"] for e in started_events}
    assert len(owners) >= 2  # several workers took from the one limit (all 3 almost always)


async def test_sigterm_finishes_short_nodes_and_hands_back_long_ones(
        engine: Engine, workers: Workers) -> None:
    short, long = new_ref("short"), new_ref("long")
    await engine.submit(short, build(*(node(f"s-{i}", data={"sleep": 1.0}) for i in range(3))))
    proc = workers.start("work", "--concurrency", "3", "--grace-ms", "20000")

    async def holding(n: int) -> bool:
        return (await engine.queue_depth(qid()))[1] == n

    await until(lambda: holding(3), "the worker to hold 3 short nodes", workers)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, WAIT_S) == 0
    assert (await engine.snapshot(short.id)).phase == "Succeeded"  # finished within grace

    await engine.submit(long, build(*(node(f"l-{i}", data={"sleep": 600}) for i in range(3))))
    proc = workers.start("work", "--concurrency", "3", "--grace-ms", "300")
    await until(lambda: holding(3), "the worker to hold 3 long nodes", workers)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, WAIT_S) == 0
    snap = await engine.snapshot(long.id)
    assert snap.phase == "Running" and snap.counts == {"ready": 3}
    assert await engine.queue_depth(qid()) == (3, 0, 0)
    released = [e["node"] for e in await engine.events(long.id) if e["type"] == "released"]
    assert sorted(released) == ["l-0", "l-1", "l-2"]
    assert {i.attempt for i in (await engine.node_infos(long.id)).values()} == {0}
    assert await runs(engine, long.uid) == Counter()


