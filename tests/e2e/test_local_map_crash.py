"""Kill the local runner (SIGKILL) while it adds the 10,000 items of a map, run it again on
the same Redis: every item exists once, the map's parent gets all values in item order, and
only items that were running at the kill ran a second time."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from kflow.api import FlowId
from kflow.engine import Engine
from kflow.store.connect import connect
from kflow.store.keys import flow_keys
from tests.e2e.local_support import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.slow]

KFLOW = ROOT / ".venv" / "bin" / "kflow"
ITEMS = 10_000

HANDLERS = """
import os
from pathlib import Path

RUNS = Path(os.environ["MAP_TEST_RUNS"])


def numbers(job):
    return {"items": list(range(job.data["n"]))}


def double(job):
    with RUNS.open("a") as f:  # one short append per run: whole lines even across a kill
        f.write(job.name + "\\n")
    return 2 * job.data["item"]


def merge(job):
    values = job.children_values()["double"]
    return {"count": len(values), "sum": sum(values), "in_order": values == sorted(values)}


HANDLERS = {"lister": numbers, "mapper": double, "merger": merge}
"""


def flow_yaml(namespace: str) -> str:
    return "\n".join([
        "apiVersion: kflow.dev/v1alpha1", "kind: Queue",
        f"metadata: {{name: mapper, namespace: {namespace}}}", "spec: {concurrency: 50}", "---",
        "apiVersion: kflow.dev/v1alpha1", "kind: Flow",
        f"metadata: {{name: big-map, namespace: {namespace}}}", "spec:", "  nodes:",
        "  - {name: merge, queue: merger, children: [double]}",
        "  - {name: double, queue: mapper, forEach: {from: numbers, path: items}}",
        f"  - {{name: numbers, queue: lister, data: {{n: {ITEMS}}}}}", ""])


def test_sigkill_while_adding_a_maps_items_then_rerun_adds_each_item_once(
        redis_srv, tmp_path: Path) -> None:
    namespace = f"map-{uuid.uuid4().hex[:6]}"
    flow = tmp_path / "map.yaml"
    flow.write_text(flow_yaml(namespace))
    handlers = tmp_path / "map_handlers.py"
    handlers.write_text(HANDLERS)
    runs = tmp_path / "runs.txt"
    uid = f"map-{uuid.uuid4().hex}"
    flow_id = FlowId(namespace, uid)
    keys = flow_keys("kflow", flow_id)
    command = [str(KFLOW), "run", "--local", str(flow), "--handlers", str(handlers),
               "--redis", redis_srv.url, "--flow-id", uid, "--quiet"]
    env = {"MAP_TEST_RUNS": str(runs), "PATH": "/usr/bin:/bin"}
    client = redis.Redis.from_url(redis_srv.url, decode_responses=True)

    def added() -> int:
        raw = client.hget(keys.progress, "double")
        return 0 if raw is None else int(json.loads(raw)["added"])

    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while added() == 0:
            assert first.poll() is None, f"runner exited early: {first.stderr.read()}"
            assert time.monotonic() < deadline, "the runner never began adding the items"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    at_kill = added()
    assert 0 < at_kill < ITEMS, f"the kill came after the expansion ({at_kill} items)"
    states = client.hgetall(keys.state)
    assert states["double"] == "expanding"
    active_at_kill = {n for n, s in states.items() if s == "active"}

    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    nodes = 3 + ITEMS
    assert f"Succeeded {nodes}/{nodes} done ({nodes} completed)" in second.stdout

    async def final() -> None:
        connection = await connect(redis_srv.url)
        try:
            engine = Engine(connection)
            snapshot = await engine.snapshot(flow_id)
            infos = await engine.node_infos(flow_id)
        finally:
            await connection.aclose()
        assert snapshot.total == snapshot.done == nodes
        assert {s: n for s, n in snapshot.counts.items() if n} == {"completed": nodes}
        assert sorted(infos) == sorted(["merge", "double", "numbers",
                                        *(f"double[{i}]" for i in range(ITEMS))])
        assert infos["merge"].result == {"count": ITEMS, "sum": 2 * sum(range(ITEMS)),
                                         "in_order": True}

    asyncio.run(final())
    ran = Counter(runs.read_text().split())
    assert set(ran) == {f"double[{i}]" for i in range(ITEMS)}
    twice = {n for n, c in ran.items() if c > 1}
    assert twice <= active_at_kill and all(c <= 2 for c in ran.values())
