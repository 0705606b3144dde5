"""`kflow-run module:function` runs one attempt from KFLOW_* variables, as a Job pod does."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kflow.api import FlowId, QueueId, load_manifests
from kflow.engine import Attempt, Engine, FlowRef
from kflow.graph import compile_flow
from kflow.store.connect import connect
from tests.e2e.local_support import ROOT

pytestmark = pytest.mark.redis

KFLOW_RUN = ROOT / ".venv" / "bin" / "kflow-run"

HANDLERS = '''
import time
from pathlib import Path


def double(job):
    job.log("doubling")
    job.update_progress(50)
    return {"v": job.data["n"] * 2, "attempt": job.attempt}


async def total(job):
    return sum(value["v"] for value in job.children_values().values())


def broken(job):
    raise LookupError(f"no such customer {job.data['n']}")


def slow(job):
    Path(job.data["marker"]).write_text("started")
    time.sleep(60)


def not_json(job):
    return {1, 2}
'''


@dataclass
class Pod:
    """What a Job pod gets: the attempt, Redis, and a place for its termination message."""

    engine: Engine
    redis_url: str
    tmp: Path
    uid: str
    namespace: str

    @property
    def flow_id(self) -> FlowId:
        return FlowId(self.namespace, self.uid)

    async def take(self, queue: str) -> Attempt:
        (attempt,) = await self.engine.take(QueueId(self.namespace, queue), 1,
                                             owner="test-op")
        return attempt

    def env(self, attempt: Attempt, *, with_data: bool = True, token: str | None = None
            ) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(self.tmp),
            "KFLOW_FLOW_UID": attempt.flow_uid, "KFLOW_FLOW_NAME": attempt.flow_name,
            "KFLOW_NAMESPACE": attempt.namespace, "KFLOW_NODE": attempt.node,
            "KFLOW_QUEUE": attempt.queue, "KFLOW_ATTEMPT": str(attempt.attempt),
            "KFLOW_TOKEN": token or attempt.token, "KFLOW_REDIS_URL": self.redis_url,
            "KFLOW_TERMINATION_LOG": str(self.tmp / "termination-log"),
        }
        if with_data:
            import json
            env["KFLOW_DATA"] = json.dumps(attempt.data)
        return env

    def run(self, function: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(KFLOW_RUN), f"pod_handlers:{function}"], env=env,
                              capture_output=True, text=True, timeout=60)

    @property
    def termination_message(self) -> str:
        path = self.tmp / "termination-log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
async def pod(redis_srv, tmp_path: Path) -> AsyncIterator[Pod]:
    (tmp_path / "pod_handlers.py").write_text(HANDLERS)
    namespace = f"pod-{uuid.uuid4().hex[:8]}"
    flow = load_manifests(f"""apiVersion: kflow.dev/v1alpha1
kind: Flow
metadata: {{name: pod-flow, namespace: {namespace}}}
spec:
  nodes:
  - name: total
    queue: sum
    children:
    - {{name: left, queue: work, data: {{n: 21, marker: {tmp_path / "marker"}}}}}
    - {{name: right, queue: work, data: {{n: 4}}}}
""")[0]
    redis = await connect(redis_srv.url)
    engine = Engine(redis)
    uid = f"pod-{uuid.uuid4().hex}"
    assert await engine.submit(FlowRef(uid, namespace, "pod-flow"), compile_flow(flow))
    try:
        yield Pod(engine, redis_srv.url, tmp_path, uid, namespace)
    finally:
        await redis.aclose()


async def test_result_is_stored_fenced_and_the_parent_reads_it(pod: Pod) -> None:
    first = await pod.take("work")
    second = await pod.take("work")
    # One pod gets its data in the environment, the other reads it from Redis.
    for attempt, with_data in ((first, True), (second, False)):
        result = pod.run("double", pod.env(attempt, with_data=with_data))
        assert result.returncode == 0, result.stderr
        outcome = await pod.engine.complete(pod.flow_id, attempt.node, attempt.token)  # MISSING
        assert outcome.accepted
    infos = await pod.engine.node_infos(pod.flow_id)
    assert infos["left"].result == {"v": 42, "attempt": 1}
    assert infos["right"].result == {"v": 8, "attempt": 1}
    assert infos["left"].progress == 50
    lines = await pod.engine.logs(pod.flow_id, node="left")
    assert any(line["msg"] == "doubling" for line in lines)
    parent = await pod.take("sum")
    result = pod.run("total", pod.env(parent))  # an async handler
    assert result.returncode == 0, result.stderr
    assert (await pod.engine.complete(pod.flow_id, "total", parent.token)).phase == "Succeeded"
    assert (await pod.engine.node_infos(pod.flow_id))["total"].result == 50
    assert pod.termination_message == ""  # success output goes to Redis, not the message


async def test_handler_exception_exits_1_with_the_error_as_termination_message(pod: Pod) -> None:
    attempt = await pod.take("work")
    result = pod.run("broken", pod.env(attempt))
    assert result.returncode == 1
    message = pod.termination_message
    assert message.startswith("LookupError: no such customer ")
    assert "pod_handlers.py" in message and "in broken" in message
    assert "kflow/sdk" not in message  # the runner's own frames are left out
    # The pod does not settle the node: the operator does, from the Job's outcome.
    assert (await pod.engine.node_infos(pod.flow_id))[attempt.node].state == "active"


async def test_a_non_json_result_fails_in_the_pod(pod: Pod) -> None:
    attempt = await pod.take("work")
    result = pod.run("not_json", pod.env(attempt))
    assert result.returncode == 1
    assert "TypeError" in pod.termination_message and "JSON" in pod.termination_message


async def test_a_stale_token_cannot_store_a_result(pod: Pod) -> None:
    attempt = await pod.take("work")
    result = pod.run("double", pod.env(attempt, token="0123456789abcdef"))
    assert result.returncode == 1
    assert "result refused" in pod.termination_message
    assert (await pod.engine.node_infos(pod.flow_id))[attempt.node].result is None


async def test_sigterm_is_reported_as_interrupted(pod: Pod) -> None:
    attempt = await pod.take("work")
    while attempt.node != "left":  # "left" carries the marker path
        attempt = await pod.take("work")
    marker = pod.tmp / "marker"
    proc = subprocess.Popen([str(KFLOW_RUN), "pod_handlers:slow"], env=pod.env(attempt),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 143  # does not wait for the 60 s sleep
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert pod.termination_message.startswith("interrupted: SIGTERM while running flow")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "KFLOW_TERMINATION_LOG": str(tmp_path / "t")}
    missing = subprocess.run([str(KFLOW_RUN), "examples.handlers:extract"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "KFLOW_" in missing.stderr
    env.update({"KFLOW_FLOW_UID": "u", "KFLOW_NODE": "n", "KFLOW_TOKEN": "t",
                "KFLOW_REDIS_URL": "redis://127.0.0.1:1/0", "PYTHONPATH": str(ROOT)})
    bad = subprocess.run([str(KFLOW_RUN), "examples.handlers:nope"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "has no attribute 'nope'" in (tmp_path / "t").read_text()
