"""Kill the local runner mid-flow (SIGKILL), start it again on the same Redis: the flow completes.

Exactly once is checked three ways: the flow's per-state counts (every accepted completion
moves one node to `completed`, so a node recorded twice would push the count past the node
count), every result and every parent's sum of its children (a parent unlocked early or fed a
value twice would be off), and the handlers' own run log (only nodes that were active when
the runner died may run a second time; nothing completed before the crash runs again).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from kflow.api import FlowId
from kflow.engine import Engine
from kflow.store.connect import connect
from tests.e2e.local_support import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.slow]

KFLOW = ROOT / ".venv" / "bin" / "kflow"
BATCHES, ITEMS = 27, 36  # 1 + 27 + 27 * 36 = 1,000 nodes


def item_value(b: int, i: int) -> int:
    return b * 1000 + i


HANDLERS = """
import asyncio
import os
from pathlib import Path

RUNS = Path(os.environ["CRASH_TEST_RUNS"])


def _ran(name):
    with RUNS.open("a") as f:  # one short append per run: whole lines even across a kill
        f.write(name + "\\n")


async def item(job):
    # Uneven durations keep the 20 slots out of step, so some node is always running.
    await asyncio.sleep(0.01 + (job.data["v"] % 7) * 0.01)
    _ran(job.name)
    return job.data["v"]


def batch(job):
    _ran(job.name)
    return sum(job.children_values().values())


def total(job):
    _ran(job.name)
    return sum(job.children_values().values())


HANDLERS = {"items": item, "batches": batch, "total": total}
"""


def flow_yaml(namespace: str) -> str:
    lines = [
        "apiVersion: kflow.dev/v1alpha1", "kind: Queue",
        f"metadata: {{name: items, namespace: {namespace}}}", "spec: {concurrency: 20}", "---",
        "apiVersion: kflow.dev/v1alpha1", "kind: Flow",
        f"metadata: {{name: thousand, namespace: {namespace}}}", "spec:", "  nodes:",
        "  - name: total", "    queue: total", "    children:",
    ]
    for b in range(BATCHES):
        lines += [f"    - name: batch-{b}", "      queue: batches", "      children:"]
        lines += [f"      - {{name: item-{b}-{i}, queue: items, data: {{v: {item_value(b, i)}}}}}"
                  for i in range(ITEMS)]
    return "\n".join(lines) + "\n"


async def read_state(url: str, uid: FlowId) -> tuple[str, dict[str, int], dict[str, str]]:
    redis = await connect(url)
    try:
        engine = Engine(redis)
        snapshot = await engine.snapshot(uid)
        infos = await engine.node_infos(uid)
        return snapshot.phase, snapshot.counts, {n: i.state for n, i in infos.items()}
    finally:
        await redis.aclose()


def test_sigkill_mid_flow_then_rerun_completes_every_node_exactly_once(
    redis_srv, tmp_path: Path
) -> None:
    namespace = f"crash-{uuid.uuid4().hex[:6]}"
    flow = tmp_path / "thousand.yaml"
    flow.write_text(flow_yaml(namespace))
    handlers = tmp_path / "crash_handlers.py"
    handlers.write_text(HANDLERS)
    runs = tmp_path / "runs.txt"
    uid = f"crash-{uuid.uuid4().hex}"
    command = [str(KFLOW), "run", "--local", str(flow), "--handlers", str(handlers),
               "--redis", redis_srv.url, "--flow-id", uid, "--quiet"]
    env = {"CRASH_TEST_RUNS": str(runs), "PATH": "/usr/bin:/bin"}

    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        completed = active = 0
        # Wait until a good part, but not all, of the flow is done and some node is running.
        while completed < 150 or active == 0:
            assert first.poll() is None, f"runner exited early: {first.stderr.read()}"
            assert time.monotonic() < deadline, "the runner made no progress"
            time.sleep(0.01)
            try:
                _, counts, _ = asyncio.run(read_state(redis_srv.url, FlowId(namespace, uid)))
            except LookupError:  # not submitted yet
                continue
            completed, active = counts.get("completed", 0), counts.get("active", 0)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL

    phase, counts, states = asyncio.run(read_state(redis_srv.url, FlowId(namespace, uid)))
    assert phase == "Running"
    done_at_kill = {n for n, s in states.items() if s == "completed"}
    active_at_kill = {n for n, s in states.items() if s == "active"}
    assert 150 <= len(done_at_kill) < 1000 and active_at_kill, Counter(states.values())

    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=180)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Succeeded 1000/1000 done (1000 completed)" in second.stdout

    redis_url = redis_srv.url

    async def final() -> None:
        redis = await connect(redis_url)
        try:
            engine = Engine(redis)
            snapshot = await engine.snapshot(FlowId(namespace, uid))
            infos = await engine.node_infos(FlowId(namespace, uid))
        finally:
            await redis.aclose()
        assert snapshot.phase == "Succeeded"
        assert snapshot.total == snapshot.done == 1000
        assert {s: n for s, n in snapshot.counts.items() if n} == {"completed": 1000}
        assert len(infos) == 1000
        expected_total = 0
        for b in range(BATCHES):
            for i in range(ITEMS):
                assert infos[f"item-{b}-{i}"].result == item_value(b, i)
            batch_sum = sum(item_value(b, i) for i in range(ITEMS))
            assert infos[f"batch-{b}"].result == batch_sum
            expected_total += batch_sum
        assert infos["total"].result == expected_total
        # Nodes the dead runner held went back to ready without spending an attempt.
        assert {n for n, info in infos.items() if info.attempt != 1} == set()

    asyncio.run(final())
    ran = Counter(runs.read_text().split())
    assert set(ran) == set(states)  # every node ran
    ran_twice = {n for n, c in ran.items() if c > 1}
    assert ran_twice <= active_at_kill  # only what was running at the kill ran again
    assert not ran_twice & done_at_kill
    assert all(c <= 2 for c in ran.values())
