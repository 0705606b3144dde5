"""A node adds children and its process dies right after (SIGKILL, the whole local runner):
the rerun runs the node again, its code adds children again (other names, even), and the flow
ends with the first set only: the add is fenced by the attempt and recorded for the run."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest

from kflow.api import FlowId
from kflow.engine import Engine
from kflow.store.connect import connect
from tests.e2e.local_support import ROOT

pytestmark = [pytest.mark.redis]

KFLOW = ROOT / ".venv" / "bin" / "kflow"

HANDLERS = """
import os
import signal
from pathlib import Path

MARK = Path(os.environ["ADD_TEST_MARK"])


def split(job):
    adds = MARK.read_text().splitlines() if MARK.exists() else []
    if len(adds) >= 2:  # the run after its children: their values
        return sorted(job.children_values().items())
    first_time = not adds
    prefix = "first" if first_time else "second"  # a retry may even pick other names
    names = job.add_children([{"name": f"{prefix}-{i}", "queue": "parts", "data": {"i": i}}
                              for i in range(3)])
    with MARK.open("a") as f:
        f.write(",".join(names) + "\\n")
    if first_time:
        os.kill(os.getpid(), signal.SIGKILL)  # the runner dies right after the add
    return None


def part(job):
    return job.data["i"] * 10


HANDLERS = {"splitter": split, "parts": part}
"""


def test_a_node_killed_after_adding_children_ends_up_with_one_set(redis_srv,
                                                                   tmp_path: Path) -> None:
    namespace = f"add-{uuid.uuid4().hex[:6]}"
    flow = tmp_path / "split.yaml"
    flow.write_text("\n".join([
        "apiVersion: kflow.dev/v1alpha1", "kind: Flow",
        f"metadata: {{name: split, namespace: {namespace}}}", "spec:", "  nodes:",
        "  - {name: split, queue: splitter}", ""]))
    handlers = tmp_path / "split_handlers.py"
    handlers.write_text(HANDLERS)
    mark = tmp_path / "adds.txt"
    uid = f"add-{uuid.uuid4().hex}"
    command = [str(KFLOW), "run", "--local", str(flow), "--handlers", str(handlers),
               "--redis", redis_srv.url, "--flow-id", uid, "--quiet"]
    env = {"ADD_TEST_MARK": str(mark), "PATH": "/usr/bin:/bin"}

    first = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert first.returncode == -9, first.stdout + first.stderr
    assert mark.read_text().splitlines() == ["first-0,first-1,first-2"]

    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    # The rerun's attempt added again and was handed the first set's names.
    assert mark.read_text().splitlines() == ["first-0,first-1,first-2"] * 2

    async def final() -> None:
        connection = await connect(redis_srv.url)
        try:
            engine = Engine(connection)
            flow_id = FlowId(namespace, uid)
            snapshot = await engine.snapshot(flow_id)
            infos = await engine.node_infos(flow_id)
        finally:
            await connection.aclose()
        assert snapshot.phase == "Succeeded" and snapshot.total == 4
        assert sorted(infos) == ["first-0", "first-1", "first-2", "split"]
        assert infos["split"].result == [["first-0", 0], ["first-1", 10], ["first-2", 20]]

    asyncio.run(final())
