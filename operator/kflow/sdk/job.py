"""The job a handler receives: its input, its children's values, and progress and log output."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kflow.api.ids import FlowId

log = logging.getLogger("kflow.job")


@dataclass(frozen=True)
class JobFlow:
    """The flow a job belongs to (the same fields as the engine's FlowRef)."""

    uid: str
    namespace: str
    name: str


class JobSink(Protocol):
    """Where a job's progress and log lines go: the Engine satisfies this."""

    async def update_progress(
        self, flow_id: FlowId, node: str, token: str, progress: Any
    ) -> None: ...

    async def log(self, flow_id: FlowId, node: str, token: str, message: str) -> None: ...

    async def add_children(self, flow_id: FlowId, node: str, token: str,
                           children: Sequence[Mapping[str, Any]], parent: str | None = None
                           ) -> list[str]: ...


class Job:
    """One attempt of one node, as the handler sees it.

    Every accessor is synchronous: the children's values and ignored failures are fetched
    before the handler starts. `update_progress` and `log` never block on Redis; they may be
    called from the event loop (async handlers) or from a worker thread (sync handlers), and
    the writes are applied in call order. Progress is coalesced: a burst of updates while a
    write is in flight costs one more write, carrying the latest value. The runner calls
    `flush()` after the handler returns so nothing is lost before the node completes.
    """

    def __init__(
        self,
        *,
        flow: JobFlow,
        name: str,
        queue: str,
        attempt: int,
        token: str,
        data: Any,
        children_values: dict[str, Any] | None = None,
        ignored_failures: dict[str, str] | None = None,
        failed_children: dict[str, str] | None = None,
        timeout_ms: int | None = None,
        sink: JobSink | None = None,
    ) -> None:
        self._flow = flow
        self._flow_id = FlowId.of(flow.namespace, flow.uid)
        self._name = name
        self._queue = queue
        self._attempt = attempt
        self._token = token
        self._data = data
        self._children_values = dict(children_values or {})
        self._ignored_failures = dict(ignored_failures or {})
        self._failed_children = dict(failed_children or {})
        self._timeout_ms = timeout_ms
        self._sink = sink
        self._loop: asyncio.AbstractEventLoop | None = None
        if sink is not None:
            self._loop = asyncio.get_running_loop()
        self._write_order = asyncio.Lock() if sink is not None else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._progress_lock = threading.Lock()
        self._progress: Any = None
        self._progress_queued = False
        self._closed = False

    @classmethod
    async def for_attempt(
        cls,
        engine: Any,
        attempt: Any,
        *,
        has_children: bool = True,
    ) -> Job:
        """Build the Job of an engine `Attempt`, fetching its inputs from the engine first.

        `has_children=False` skips the reads for a leaf (its inputs are empty anyway).
        """
        children: dict[str, Any] = {}
        ignored: dict[str, str] = {}
        failed: dict[str, str] = {}
        if has_children:
            # One read of all three: the inputs script collects them together.
            flow_id = FlowId.of(attempt.namespace, attempt.flow_uid)
            [(children, ignored, failed)] = await engine.inputs_many(flow_id, [attempt.node])
        return cls(
            flow=JobFlow(uid=attempt.flow_uid, namespace=attempt.namespace, name=attempt.flow_name),
            name=attempt.node,
            queue=attempt.queue,
            attempt=attempt.attempt,
            token=attempt.token,
            data=attempt.data,
            children_values=children,
            ignored_failures=ignored,
            failed_children=failed,
            timeout_ms=attempt.timeout_ms,
            sink=engine,
        )

    # --- what the handler reads -------------------------------------------------------------

    @property
    def data(self) -> Any:
        """The node's `data` from the Flow spec (JSON)."""
        return self._data

    @property
    def name(self) -> str:
        """The node's name, unique within its flow."""
        return self._name

    @property
    def queue(self) -> str:
        """The queue the node runs on."""
        return self._queue

    @property
    def flow(self) -> JobFlow:
        """The flow this node belongs to: uid, namespace, name."""
        return self._flow

    @property
    def attempt(self) -> int:
        """Which attempt this is, counting from 1."""
        return self._attempt

    @property
    def token(self) -> str:
        """The fencing token of this attempt (results written with an older one are refused)."""
        return self._token

    @property
    def timeout_ms(self) -> int | None:
        """The node's timeout, if it has one."""
        return self._timeout_ms

    def children_values(self) -> dict[str, Any]:
        """The return values of the children that completed, keyed by child name."""
        return dict(self._children_values)

    def ignored_failures(self) -> dict[str, str]:
        """The errors of children that failed under `onFailure: ignore`, keyed by child name."""
        return dict(self._ignored_failures)

    def failed_children(self) -> dict[str, str]:
        """The errors of children that failed for good, keyed by child name (BullMQ's
        `getFailedChildrenValues`). A parent runs with such children only when one of them
        has `onFailure: continueParent`: it started the parent when it failed."""
        return dict(self._failed_children)

    # --- what the handler reports -----------------------------------------------------------

    def update_progress(self, progress: Any) -> None:
        """Record the node's progress (a number or any JSON value); never blocks."""
        log.debug("progress %s", progress, extra=self._log_extra())
        if self._sink is None or self._closed:
            return
        with self._progress_lock:
            self._progress = progress
            if self._progress_queued:
                return  # the queued write will carry this newer value
            self._progress_queued = True
        self._submit(self._write_progress)

    def log(self, message: str) -> None:
        """Add a line to the node's log (kept in Redis with the node); never blocks."""
        text = str(message)
        log.info("%s", text, extra=self._log_extra())
        if self._sink is None or self._closed:
            return
        sink = self._sink

        async def write() -> None:
            await sink.log(self._flow_id, self._name, self._token, text)

        self._submit(write)

    def add_children(self, children: Sequence[Mapping[str, Any]], parent: str | None = None
                     ) -> list[str]:
        """Add nodes to the flow while this node runs (BullMQ's dynamic children): under
        this node, which then runs again once they are done (that run's return value is its
        value; this run's is dropped), or under `parent`, a node waiting for its children,
        which then waits for these too. `children` are node specs as in a Flow's
        `spec.nodes` (name, queue, data, opts, children, forEach, when); they may refer only
        to each other. Returns their names. If an earlier attempt of this node already
        added children (it died after the add and was retried), nothing is added and their
        names are returned: a node ends up with one set of children. Raises ChildrenError
        naming the problem (a name the flow has, a bad queue name, a cycle...).

        For sync handlers (they run in a thread); an async handler awaits
        `add_children_async`.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("add_children needs a job the engine runs")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("in an async handler, use `await job.add_children_async(...)`")
        future = asyncio.run_coroutine_threadsafe(
            self.add_children_async(children, parent), loop)
        return future.result()

    async def add_children_async(self, children: Sequence[Mapping[str, Any]],
                                 parent: str | None = None) -> list[str]:
        """`add_children` for async handlers."""
        if self._sink is None:
            raise RuntimeError("add_children needs a job the engine runs")
        return await self._sink.add_children(self._flow_id, self._name, self._token,
                                             children, parent)

    async def flush(self) -> None:
        """Wait until every progress and log write made so far has reached the sink."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Flush, then drop any later progress or log calls (a late thread must not write)."""
        await self.flush()
        self._closed = True

    # --- internals --------------------------------------------------------------------------

    def _log_extra(self) -> dict[str, Any]:
        return {"flow": f"{self._flow.namespace}/{self._flow.name}", "node": self._name}

    async def _write_progress(self) -> None:
        assert self._sink is not None
        with self._progress_lock:
            value = self._progress
            self._progress_queued = False
        await self._sink.update_progress(self._flow_id, self._name, self._token, value)

    def _submit(self, write: Callable[[], Awaitable[None]]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._start_write(write)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._start_write, write)

    def _start_write(self, write: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.get_running_loop().create_task(self._ordered(write))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ordered(self, write: Callable[[], Awaitable[None]]) -> None:
        # asyncio.Lock wakes waiters first-come first-served, and tasks reach it in the order
        # they were created, so writes land in the order the handler made them.
        assert self._write_order is not None
        async with self._write_order:
            try:
                await write()
            except Exception as exc:  # a lost progress line must not fail the node
                log.warning("could not record progress/log: %s", exc, extra=self._log_extra())
