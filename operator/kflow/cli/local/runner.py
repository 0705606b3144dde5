"""Run one flow to its end on this machine: a `kflow worker` loop per queue, in-process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kflow.api.ids import FlowId, QueueId
from kflow.api.states import TERMINAL_PHASES
from kflow.engine import Attempt, Engine, FlowSnapshot
from kflow.graph.dag import CompiledFlow
from kflow.sdk.handlers import Handler
from kflow.sdk.worker import Worker, WorkerOptions

# A local run is the only executor of its flow, so a short lease lets a restarted runner take
# back the nodes of a killed one within seconds (the engine hands them back once it expires).
DEFAULT_LEASE_MS = 4_000
# With nothing running, the flow's ready nodes are checked against the queues this often.
RECONCILE_WHEN_IDLE_S = 2.0
# How many nodes of one queue this process runs at once at most, whatever the Queue allows.
DEFAULT_MAX_PARALLEL = 64


@dataclass
class RunnerStats:
    """What one runner did; `max_running` is per queue id, as seen by this process."""

    started: int = 0
    completed: int = 0
    failed: int = 0
    stale: int = 0
    max_running: dict[str, int] = field(default_factory=dict)


# Called as (node, state, detail) when one of the flow's nodes changes state: "ready" (detail
# empty), "completed" (detail: the result as compact JSON), "failed", "delayed" (detail: why).
NodeStateCallback = Callable[[str, str, str], None]


class RunInterrupted(Exception):
    """The run was asked to stop (SIGINT/SIGTERM) before the flow finished."""


class LocalRunner:
    """Drive one flow to a terminal phase by serving its queues with in-process workers.

    Each queue the flow uses gets a `Worker` (the loop of `kflow worker`) running the handler
    registered for it, so a local run exercises exactly the code that serves queues in
    production: `take` hands out ready nodes within each queue's concurrency and rate limit
    (across all flows on those queues), leases are renewed while handlers run, completions
    are batched, and expired leases (a killed runner's nodes) are handed back, so a restart
    resumes where the last run stopped. This class only watches the flow and stops them.
    """

    def __init__(
        self,
        engine: Engine,
        handlers: Mapping[str, Handler],
        *,
        owner: str | None = None,
        lease_ms: int = DEFAULT_LEASE_MS,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
        on_event: NodeStateCallback | None = None,
        interrupt: asyncio.Event | None = None,
    ) -> None:
        self.engine = engine
        # Checked on every turn of the loop: a stop flag cannot be lost the way a task
        # cancellation inside a Redis call could be with some clients.
        self.interrupt = interrupt or asyncio.Event()
        self.handlers = dict(handlers)
        self.owner = owner or f"local-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_ms = lease_ms
        self.max_parallel = max_parallel
        self.on_event = on_event
        self._workers: dict[str, Worker] = {}
        self._tasks: dict[QueueId, asyncio.Task[None]] = {}  # the running workers' loops
        self._wake = asyncio.Event()
        self._flow_uid = ""

    @property
    def stats(self) -> RunnerStats:
        totals = RunnerStats()
        for queue_id, worker in self._workers.items():
            totals.started += worker.stats["taken"]
            totals.completed += worker.stats["completed"]
            totals.failed += worker.stats["failed"]
            totals.stale += worker.stats["refused"]
            totals.max_running[queue_id] = worker.stats["max_running"]
        return totals

    async def run(
        self, flow_uid: str, namespace: str, compiled: CompiledFlow, *, resumed: bool = True,
        keep_serving: bool = False,
    ) -> FlowSnapshot:
        """Run until the flow's phase is terminal and no node of it runs; then stop the workers.

        `resumed=False` says the flow was just submitted (submit already queued its leaves).
        `keep_serving` leaves the workers running for the next `run` (the exit handlers',
        which the flow's end puts on the same queues): `close` stops them.
        """
        self._flow_uid = flow_uid
        flow_id = FlowId.of(namespace, flow_uid)
        missing = sorted(q for q in compiled.queues if q not in self.handlers)
        if missing:
            raise ValueError(f"no handler registered for queue(s) {', '.join(missing)}")
        # A runner killed between a node's flow step and its queue step leaves parents ready
        # in the flow but missing from their queue: put them back before taking anything.
        if resumed:
            await self.engine.reconcile_flow(flow_id)
        options = WorkerOptions(concurrency=self.max_parallel, lock_ms=self.lease_ms,
                                owner=self.owner, poll_max_s=0.05,
                                # A finished flow needs nothing more from running handlers,
                                # and an interrupted run resumes them: hand them back at once.
                                grace_ms=0)
        for queue in sorted(compiled.queues):
            self._serve(namespace, queue, options)
        last_reconcile = time.monotonic()
        total = len(compiled.nodes)
        try:
            while True:
                if self.interrupt.is_set():
                    raise RunInterrupted(f"flow {flow_uid}: interrupted")
                for task in list(self._tasks.values()):
                    if task.done() and task.exception() is not None:
                        raise RuntimeError("a queue worker stopped") from task.exception()
                self._wake.clear()
                snapshot = await self.engine.snapshot(flow_id)
                if snapshot.total != total:  # nodes were added (forEach, add_children)
                    total = snapshot.total
                    await self._serve_added_queues(flow_id, options)
                # A failed flow's running handlers finish and are recorded as they end (as
                # its pods would on a cluster); a lease that lapses meanwhile is cancelled.
                if snapshot.phase in TERMINAL_PHASES and not snapshot.counts.get("active"):
                    return snapshot
                now = time.monotonic()
                idle = not any(w.running for w in self._workers.values())
                if idle and now - last_reconcile >= RECONCILE_WHEN_IDLE_S:
                    last_reconcile = now
                    await self.engine.reconcile_flow(flow_id)
                # Completions wake the loop at once; the timeout covers everything else.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.1)
        finally:
            if not keep_serving:
                await self.close()

    def _serve(self, namespace: str, queue: str, options: WorkerOptions) -> None:
        queue_id = QueueId(namespace, queue)
        if queue_id in self._tasks:
            return  # served already (since the last run, with keep_serving)
        worker = self._workers[queue_id] = Worker(
            self.engine, queue_id, self.handlers[queue], options, on_event=self._node_event)
        self._tasks[queue_id] = asyncio.create_task(worker.run(), name=f"kflow-local-{queue}")

    async def _serve_added_queues(self, flow_id: FlowId, options: WorkerOptions) -> None:
        """Serve the queues of nodes added while the flow runs (job.add_children)."""
        meta = await self.engine.store.meta(flow_id)
        queues = () if meta is None else meta.queues
        missing = sorted(q for q in queues if q not in self.handlers)
        if missing:
            raise ValueError(f"nodes were added on queue(s) {', '.join(missing)}, for which "
                             "no handler is registered")
        for queue in queues:
            self._serve(flow_id.namespace, queue, options)

    async def close(self) -> None:
        """Stop every worker; nodes they run are handed back (grace 0)."""
        for worker in self._workers.values():
            worker.stop()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks = {}

    def _node_event(self, attempt: Attempt, state: str, detail: str) -> None:
        if state in ("completed", "failed", "delayed"):
            self._wake.set()
        if self.on_event is None or attempt.flow_uid != self._flow_uid:
            return
        if state == "ready":
            self.on_event(detail, "ready", "")
        else:
            self.on_event(attempt.node, state, detail)
