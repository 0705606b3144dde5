"""Helpers for the local-runner tests: run an example in-process and record every handler call."""

from __future__ import annotations

import asyncio
import functools
import io
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.api import FlowId
from kflow.cli.local.command import LocalRun, execute_local_run, prepare_local_run
from kflow.devkit.checkout import REPO
from kflow.engine import Engine, FlowSnapshot, NodeInfo
from kflow.sdk import Job
from kflow.sdk.handlers import Handler, is_async_handler
from kflow.store.connect import connect

ROOT = REPO
EXAMPLES = ROOT / "examples"
HANDLERS = EXAMPLES / "handlers.py"


@dataclass(frozen=True)
class Call:
    node: str
    attempt: int
    data: Any
    children_values: dict[str, Any]
    ignored_failures: dict[str, str]


@dataclass
class CallLog:
    """Every handler call, in start order, and the most handlers of one queue running at once."""

    calls: list[Call] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    max_running: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, queue: str, job: Job) -> None:
        with self.lock:
            self.calls.append(Call(job.name, job.attempt, job.data, job.children_values(),
                                   job.ignored_failures()))
            self.running[queue] = self.running.get(queue, 0) + 1
            self.max_running[queue] = max(self.max_running.get(queue, 0), self.running[queue])

    def leave(self, queue: str) -> None:
        with self.lock:
            self.running[queue] -= 1

    def of(self, node: str) -> list[Call]:
        return [c for c in self.calls if c.node == node]


def recorded(handlers: dict[str, Handler], log: CallLog) -> dict[str, Handler]:
    """The same handlers, each wrapped to record its calls (async stays async, sync stays sync)."""
    wrapped: dict[str, Handler] = {}
    for queue, fn in handlers.items():
        if is_async_handler(fn):
            async def call_async(job: Job, fn: Callable[..., Any] = fn, queue: str = queue) -> Any:
                log.enter(queue, job)
                try:
                    return await fn(job)
                finally:
                    log.leave(queue)
            wrapped[queue] = call_async
        else:
            @functools.wraps(fn)
            def call_sync(job: Job, fn: Callable[..., Any] = fn, queue: str = queue) -> Any:
                log.enter(queue, job)
                try:
                    return fn(job)
                finally:
                    log.leave(queue)
            wrapped[queue] = call_sync
    return wrapped


@dataclass
class LocalOutcome:
    exit_code: int
    output: str
    snapshot: FlowSnapshot
    nodes: dict[str, NodeInfo]
    log: CallLog
    run: LocalRun

    def result(self, node: str) -> Any:
        return self.nodes[node].result


async def run_flow_file(path: Path, redis_url: str, *, handlers: Path = HANDLERS,
                        flow_id: str | None = None) -> LocalOutcome:
    """Run a flow file as `kflow run --local` does, in this process, recording handler calls."""
    run = prepare_local_run(path, handlers, flow_id=flow_id or f"test-{uuid.uuid4().hex}")
    log = CallLog()
    run.handlers = recorded(run.handlers, log)
    out = io.StringIO()
    code = await asyncio.wait_for(
        execute_local_run(run, redis_url, quiet=True, stream=out, redraw=False), timeout=60)
    redis = await connect(redis_url)
    try:
        engine = Engine(redis)
        flow_id = FlowId(run.namespace, run.flow_uid)
        snapshot = await engine.snapshot(flow_id)
        nodes = await engine.node_infos(flow_id)
    finally:
        await redis.aclose()
    return LocalOutcome(code, out.getvalue(), snapshot, nodes, log, run)
