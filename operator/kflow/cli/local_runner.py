"""Run a whole Flow on this machine: the engine over a Redis, handlers called in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kflow.cli.redis_server import private_redis
from kflow.engine import Attempt, Engine, FlowRef, FlowSnapshot, NodeInfo, QueueConfig
from kflow.graph.dag import CompiledFlow
from kflow.sdk.handlers import Handler
from kflow.sdk.worker import Worker, WorkerOptions
from kflow.store.connect import connect

if TYPE_CHECKING:
    from kflow.api.errors import SpecError

log = logging.getLogger("kflow.local")

TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})

# A local run is the only executor of its flow, so a short lease lets a restarted runner take
# back the nodes of a killed one within seconds (the engine hands them back once it expires).
DEFAULT_LEASE_MS = 4_000
# Queues the file declares no Queue object for: enough to overlap I/O-bound handlers.
DEFAULT_QUEUE_CONCURRENCY = 16
# With nothing running, the flow's ready nodes are checked against the queues this often.
RECONCILE_WHEN_IDLE_S = 2.0
# A killed runner's nodes go back to ready without spending an attempt this many times.
LOCAL_MAX_STALLED = 3
# How many nodes of one queue this process runs at once at most, whatever the Queue allows.
DEFAULT_MAX_PARALLEL = 64


# --------------------------------------------------------------------------------------------
# Flow identity and queue settings
# --------------------------------------------------------------------------------------------


def flow_identity(flow: Any) -> tuple[str, str]:
    """The (namespace, name) a local run gives a Flow; generateName flows get a fixed suffix."""
    meta = flow.metadata
    namespace = getattr(meta, "namespace", None) or "default"
    name = getattr(meta, "name", None)
    if not name:
        name = f"{getattr(meta, 'generate_name', None) or 'flow-'}local"
    return namespace, name


def derive_flow_uid(namespace: str, name: str) -> str:
    """A uid fixed by the flow's name, so running the same file again resumes the same flow."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kflow-local:{namespace}/{name}"))


def queue_configs(
    namespace: str, flow_queues: Iterable[str], queue_objects: Iterable[Any]
) -> dict[str, QueueConfig]:
    """QueueConfig per queue id for every queue the flow uses (defaults where no Queue is given)."""
    declared: dict[str, Any] = {}
    for queue in queue_objects:
        ns = getattr(queue.metadata, "namespace", None) or namespace
        declared[f"{ns}/{queue.metadata.name}"] = queue
    configs: dict[str, QueueConfig] = {}
    for queue_name in sorted(flow_queues):
        queue_id = f"{namespace}/{queue_name}"
        obj = declared.get(queue_id)
        if obj is None:
            configs[queue_id] = QueueConfig(concurrency=DEFAULT_QUEUE_CONCURRENCY,
                                            max_stalled=LOCAL_MAX_STALLED)
            continue
        spec = obj.spec
        rate = getattr(spec, "rate_limit", None)
        configs[queue_id] = QueueConfig(
            concurrency=spec.concurrency,  # unset: unlimited, as on a cluster
            rate_max=rate.max if rate is not None else None,
            rate_per_ms=rate.per if rate is not None else None,  # already milliseconds
            max_stalled=LOCAL_MAX_STALLED,
        )
    return configs


# --------------------------------------------------------------------------------------------
# The runner: takes ready nodes, calls handlers, completes or fails them
# --------------------------------------------------------------------------------------------


@dataclass
class RunnerStats:
    """What one runner did; `max_running` is per queue id, as seen by this process."""

    started: int = 0
    completed: int = 0
    failed: int = 0
    stale: int = 0
    max_running: dict[str, int] = field(default_factory=dict)


NodeEvent = Callable[[str, str, str], None]  # (node, state, detail)


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
        on_event: NodeEvent | None = None,
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
        self, flow_uid: str, namespace: str, compiled: CompiledFlow, *, resumed: bool = True
    ) -> FlowSnapshot:
        """Run until the flow's phase is terminal and no node of it runs; then stop the workers.

        `resumed=False` says the flow was just submitted (submit already queued its leaves).
        """
        self._flow_uid = flow_uid
        missing = sorted(q for q in compiled.queues if q not in self.handlers)
        if missing:
            raise ValueError(f"no handler registered for queue(s) {', '.join(missing)}")
        # A runner killed between a node's flow step and its queue step leaves parents ready
        # in the flow but missing from their queue: put them back before taking anything.
        if resumed:
            await self.engine.reconcile_flow(flow_uid)
        options = WorkerOptions(concurrency=self.max_parallel, lock_ms=self.lease_ms,
                                owner=self.owner, poll_max_s=0.05,
                                # A finished flow needs nothing more from running handlers,
                                # and an interrupted run resumes them: hand them back at once.
                                grace_ms=0)
        self._workers = {
            f"{namespace}/{queue}": Worker(self.engine, f"{namespace}/{queue}",
                                           self.handlers[queue], options,
                                           on_event=self._node_event)
            for queue in sorted(compiled.queues)
        }
        tasks = [asyncio.create_task(w.run(), name=f"kflow-local-{q}")
                 for q, w in self._workers.items()]
        last_reconcile = time.monotonic()
        try:
            while True:
                if self.interrupt.is_set():
                    raise RunInterrupted(f"flow {flow_uid}: interrupted")
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise RuntimeError("a queue worker stopped") from task.exception()
                self._wake.clear()
                snapshot = await self.engine.snapshot(flow_uid)
                # A failed flow's running handlers finish and are recorded as they end (as
                # its pods would on a cluster); a lease that lapses meanwhile is cancelled.
                if snapshot.phase in TERMINAL_PHASES and not snapshot.counts.get("active"):
                    return snapshot
                now = time.monotonic()
                idle = not any(w.running for w in self._workers.values())
                if idle and now - last_reconcile >= RECONCILE_WHEN_IDLE_S:
                    last_reconcile = now
                    await self.engine.reconcile_flow(flow_uid)
                # Completions wake the loop at once; the timeout covers everything else.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.1)
        finally:
            for worker in self._workers.values():
                worker.stop()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _node_event(self, attempt: Attempt, state: str, detail: str) -> None:
        if state in ("completed", "failed", "delayed"):
            self._wake.set()
        if self.on_event is None or attempt.flow_uid != self._flow_uid:
            return
        if state == "ready":
            self.on_event(detail, "ready", "")
        elif state == "completed":
            self.on_event(attempt.node, state, _clip(detail))  # already compact JSON
        else:
            self.on_event(attempt.node, state, detail)


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return _clip(text, limit)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# The tree of node states
# --------------------------------------------------------------------------------------------

_MARKS_UNICODE = {
    "completed": "✔", "failed": "✘", "active": "▶", "ready": "○", "waiting-children": "◌",
    "delayed": "◷", "ignored": "⊘", "removed": "⊖", "cancelled": "⊗",
}
_MARKS_ASCII = {
    "completed": "+", "failed": "x", "active": ">", "ready": "o", "waiting-children": ".",
    "delayed": "~", "ignored": "-", "removed": "-", "cancelled": "/",
}
MAX_SHOWN_CHILDREN = 12
MAX_INDENT_DEPTH = 24


def _use_unicode(stream: IO[str]) -> bool:
    encoding = (getattr(stream, "encoding", None) or "").lower()
    return "utf" in encoding


def describe_node(
    name: str, queue: str, info: NodeInfo | None, *, unicode: bool = True
) -> str:
    """One line of the tree: mark, name, queue, state and what matters in that state."""
    state = info.state if info is not None else "unknown"
    marks = _MARKS_UNICODE if unicode else _MARKS_ASCII
    text = f"{marks.get(state, '?')} {name} [{queue}] {state}"
    if info is None:
        return text
    if info.attempt > 1:
        text += f" (attempt {info.attempt})"
    if state == "active" and info.progress is not None:
        text += f" progress {_short(info.progress, 20)}"
    if state == "completed":
        text += f" → {_short(info.result)}" if unicode else f" -> {_short(info.result)}"
    if info.error and state in {"failed", "ignored", "removed", "cancelled", "delayed"}:
        first = info.error.strip().splitlines()[0] if info.error.strip() else ""
        text += f": {first[:160]}"
    return text


def render_tree(
    compiled: CompiledFlow,
    infos: Mapping[str, NodeInfo],
    *,
    unicode: bool = True,
    max_lines: int | None = None,
) -> list[str]:
    """The flow as a tree from its roots down to its leaves, one line per node.

    A node with several parents is drawn in full under the first and referred to under
    the others. Long child lists show unfinished children first and summarise the rest.
    The walk is iterative: a 100,000-deep chain draws without recursion.
    """
    pipe, tee, elbow, blank = (
        ("│  ", "├─ ", "└─ ", "   ") if unicode else ("|  ", "|- ", "`- ", "   ")
    )
    lines: list[str] = []
    drawn: set[str] = set()
    # Stack items: (node name, prefix, is_last, depth) or a ready-made summary line.
    stack: list[tuple[str, str, bool, int] | str] = [
        (root, "", True, 0) for root in reversed(compiled.roots)
    ]
    while stack:
        if max_lines is not None and len(lines) >= max_lines:
            lines.append(f"… (tree cut at {max_lines} lines)" if unicode else "... (cut)")
            break
        item = stack.pop()
        if isinstance(item, str):
            lines.append(item)
            continue
        name, prefix, last, depth = item
        node = compiled.nodes[name]
        connector = "" if depth == 0 else (elbow if last else tee)
        line = prefix + connector + describe_node(name, node.queue, infos.get(name),
                                                  unicode=unicode)
        if name in drawn and node.children:
            lines.append(line + " (children drawn above)")
            continue
        lines.append(line)
        drawn.add(name)
        if depth >= MAX_INDENT_DEPTH:
            child_prefix = prefix  # past this depth the tree stops moving right
        else:
            child_prefix = prefix + ("" if depth == 0 else (blank if last else pipe))
        children = list(node.children)
        shown, hidden = _pick_children(children, infos)
        entries: list[tuple[str, str, bool, int] | str] = [
            (child, child_prefix, i == len(shown) - 1 and not hidden, depth + 1)
            for i, child in enumerate(shown)
        ]
        if hidden:
            counts: dict[str, int] = {}
            for child in hidden:
                info = infos.get(child)
                state = info.state if info is not None else "unknown"
                counts[state] = counts.get(state, 0) + 1
            summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
            more = "…" if unicode else "..."
            entries.append(f"{child_prefix}{elbow}{more} {len(hidden)} more: {summary}")
        stack.extend(reversed(entries))
    return lines


def _pick_children(
    children: list[str], infos: Mapping[str, NodeInfo]
) -> tuple[list[str], list[str]]:
    if len(children) <= MAX_SHOWN_CHILDREN:
        return children, []
    def finished_ok(child: str) -> bool:
        info = infos.get(child)
        return info is not None and info.state == "completed"
    unfinished = [c for c in children if not finished_ok(c)]
    first = unfinished[: MAX_SHOWN_CHILDREN - 1]
    if len(first) < MAX_SHOWN_CHILDREN - 1:
        first += [c for c in children if finished_ok(c)][: MAX_SHOWN_CHILDREN - 1 - len(first)]
    keep = set(first)
    return [c for c in children if c in keep], [c for c in children if c not in keep]


class TreeView:
    """Shows a local run: a redrawn tree on a terminal, state changes line by line otherwise."""

    # Past this many nodes the live view shows counts only (reading every node is too slow).
    LIVE_NODE_LIMIT = 2_000

    def __init__(
        self,
        compiled: CompiledFlow,
        flow_label: str,
        *,
        stream: IO[str] | None = None,
        quiet: bool = False,
        redraw: bool | None = None,
    ) -> None:
        self.compiled = compiled
        self.flow_label = flow_label
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.redraw = self.stream.isatty() if redraw is None else redraw
        self.unicode = _use_unicode(self.stream)
        self._states: dict[str, str] = {}
        self._drawn_lines = 0
        self._last_counts = ""

    # Runner events arrive as they happen; polls fill in the engine's own transitions.
    def node_event(self, node: str, state: str, detail: str) -> None:
        if self._states.get(node) == state and state != "delayed":
            return
        self._states[node] = state
        if not self.quiet and not self.redraw:
            self._line(f"{node}: {state}" + (f" ({detail})" if detail else ""))

    def job_log(self, node: str, message: str) -> None:
        if not self.quiet and not self.redraw:
            self._line(f"{node}: log: {message}")

    async def poll(self, engine: Engine, flow_uid: str, snapshot: FlowSnapshot) -> None:
        if self.quiet:
            return
        if snapshot.total > self.LIVE_NODE_LIMIT:
            counts = _format_counts(snapshot)
            if counts != self._last_counts:
                self._last_counts = counts
                self._line(f"{self.flow_label}: {snapshot.phase} {counts}")
            return
        infos = await engine.node_infos(flow_uid)
        if self.redraw:
            self._redraw(self._frame(snapshot, infos))
            return
        for name in self.compiled.nodes:
            info = infos.get(name)
            if info is not None and self._states.get(name) != info.state:
                self.node_event(name, info.state, _detail(info))

    def final(self, snapshot: FlowSnapshot, infos: Mapping[str, NodeInfo]) -> None:
        frame = self._frame(snapshot, infos, max_lines=400)
        if snapshot.failures:
            handled = snapshot.phase == "Succeeded"
            frame.append("failures (handled by onFailure):" if handled else "failures:")
            for failure in snapshot.failures:
                first, *rest = failure.error.strip().splitlines() or [""]
                frame.append(f"  {failure.node} (attempt {failure.attempt}): {first}")
                frame.extend(f"      {line}" for line in rest)
        if self.redraw and self._drawn_lines:  # replace the live frame, then print in full
            self.stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")
            self._drawn_lines = 0
        for line in frame:
            self._line(line)

    def _frame(
        self, snapshot: FlowSnapshot, infos: Mapping[str, NodeInfo], max_lines: int | None = None
    ) -> list[str]:
        if max_lines is None and self.redraw:
            rows = shutil.get_terminal_size((100, 40)).lines
            max_lines = max(rows - 3, 5)
        header = f"Flow {self.flow_label}: {snapshot.phase} {_format_counts(snapshot)}"
        return [header, *render_tree(self.compiled, infos, unicode=self.unicode,
                                     max_lines=max_lines)]

    def _redraw(self, lines: list[str]) -> None:
        width = shutil.get_terminal_size((100, 40)).columns
        out = []
        if self._drawn_lines:
            out.append(f"\x1b[{self._drawn_lines}F\x1b[J")
        out.extend(line[: width - 1] + "\n" for line in lines)
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn_lines = len(lines)

    def message(self, text: str) -> None:
        """A line of its own, outside the tree (not shown with --quiet by the caller)."""
        self._line(text)

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _format_counts(snapshot: FlowSnapshot) -> str:
    states = ", ".join(f"{n} {s}" for s, n in sorted(snapshot.counts.items()) if n)
    return f"{snapshot.done}/{snapshot.total} done ({states})"


def _detail(info: NodeInfo) -> str:
    if info.state == "completed":
        return _short(info.result)
    if info.error:
        return info.error.strip().splitlines()[0][:160] if info.error.strip() else ""
    return ""


class _JobLogForwarder(logging.Handler):
    """Sends job.log lines of the flow being run to the view."""

    def __init__(self, view: TreeView) -> None:
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        node = getattr(record, "node", None)
        if node is not None:
            self.view.job_log(str(node), record.getMessage())


# --------------------------------------------------------------------------------------------
# `kflow run --local`
# --------------------------------------------------------------------------------------------

EXIT_OK = 0
EXIT_FLOW_FAILED = 1
EXIT_INVALID = 2
EXIT_RUNTIME = 3
EXIT_INTERRUPTED = 130


@dataclass
class LocalRun:
    """Everything `kflow run --local` needs, already parsed and checked (nothing written yet)."""

    flow: Any
    compiled: CompiledFlow
    queues: list[Any]
    handlers: dict[str, Handler]
    namespace: str
    name: str
    flow_uid: str


def prepare_local_run(
    flow_path: str | Path, handlers_path: str | Path, *, flow_id: str | None = None
) -> LocalRun:
    """Parse and compile the file and load the handlers; raises SpecError / HandlerError.

    This touches no Redis: a run whose input is invalid writes nothing.
    """
    from kflow.api import Flow, Queue, load_manifests
    from kflow.api.errors import SpecError
    from kflow.graph import compile_flow
    from kflow.sdk.handlers import HandlerError, load_handlers

    objects = load_manifests(Path(flow_path))
    flows = [o for o in objects if isinstance(o, Flow)]
    queues = [o for o in objects if isinstance(o, Queue)]
    if len(flows) != 1:
        raise SpecError(
            object_ref=f"file {flow_path}",
            field="kind",
            message=(f"{flow_path} holds {len(flows)} Flow objects; a local run needs exactly "
                     "one (put the Queue objects it uses beside it)"),
        )
    flow = flows[0]
    compiled = compile_flow(flow)
    handlers = load_handlers(handlers_path)
    namespace, name = flow_identity(flow)
    missing = sorted(q for q in compiled.queues if q not in handlers)
    if missing:
        raise HandlerError(
            f"Flow {namespace}/{name} uses queue(s) {', '.join(missing)} but {handlers_path} "
            "registers no handler for them: add @kflow.sdk.handler('<queue>') functions"
        )
    return LocalRun(
        flow=flow, compiled=compiled, queues=queues, handlers=handlers, namespace=namespace,
        name=name, flow_uid=flow_id or derive_flow_uid(namespace, name),
    )


async def execute_local_run(
    run: LocalRun,
    redis_url: str,
    *,
    quiet: bool = False,
    stream: IO[str] | None = None,
    redraw: bool | None = None,
    lease_ms: int = DEFAULT_LEASE_MS,
    interrupt: asyncio.Event | None = None,
) -> int:
    """Submit (or resume) the flow on `redis_url`, run it, show it; return the exit code.

    Setting `interrupt` stops the run: RunInterrupted is raised, running nodes keep their
    leases until they lapse, and the same call later resumes the flow.
    """
    out = stream or sys.stdout
    view = TreeView(run.compiled, f"{run.namespace}/{run.name}", stream=out, quiet=quiet,
                    redraw=redraw)
    forwarder = _JobLogForwarder(view)
    job_logger = logging.getLogger("kflow.job")
    job_logger.addHandler(forwarder)
    job_logger.setLevel(logging.INFO)
    job_logger.propagate = False
    redis = await connect(redis_url)
    try:
        engine = Engine(redis)
        for queue_id, config in queue_configs(run.namespace, run.compiled.queues,
                                              run.queues).items():
            await engine.configure_queue(queue_id, config)
        ref = FlowRef(uid=run.flow_uid, namespace=run.namespace, name=run.name)
        ttl = getattr(run.flow.spec, "ttl_seconds_after_finished", None)
        created = await engine.submit(ref, run.compiled, ttl_seconds_after_finished=ttl)
        if not quiet:
            verb = "submitted" if created else "resuming"
            view.message(f"Flow {run.namespace}/{run.name} ({run.flow_uid}): {verb}, "
                       f"{len(run.compiled.nodes)} nodes")
        runner = LocalRunner(engine, run.handlers, lease_ms=lease_ms, on_event=view.node_event,
                             interrupt=interrupt)
        stop_watching = asyncio.Event()
        watcher = asyncio.create_task(_watch(view, engine, run.flow_uid, stop_watching))
        try:
            snapshot = await runner.run(run.flow_uid, run.namespace, run.compiled,
                                        resumed=not created)
        finally:
            stop_watching.set()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(watcher, timeout=5)
        infos = await engine.node_infos(run.flow_uid) if snapshot.total <= 200_000 else {}
        view.final(snapshot, infos)
        return EXIT_OK if snapshot.phase == "Succeeded" else EXIT_FLOW_FAILED
    finally:
        job_logger.removeHandler(forwarder)
        await redis.aclose()


async def _watch(view: TreeView, engine: Engine, flow_uid: str, stop: asyncio.Event) -> None:
    # Stopped by an event rather than by cancelling: a cancellation that lands inside a Redis
    # call can be absorbed by the client, and the loop would go on.
    interval = 0.25 if view.redraw else 0.5
    while not stop.is_set():
        try:
            await view.poll(engine, flow_uid, await engine.snapshot(flow_uid))
        except Exception as exc:  # the view must never stop the run
            log.debug("view poll failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def write_spec_error(exc: SpecError, out: IO[str], *, prefix: str = "error: ") -> None:
    """One line per problem, each naming the object, the node and the field (as lint)."""
    from kflow.api.errors import error_lines

    for line in error_lines(exc):
        out.write(f"{prefix}{line}\n")


def run_local_command(
    flow_path: str,
    handlers_path: str,
    *,
    redis_url: str | None = None,
    flow_id: str | None = None,
    quiet: bool = False,
    stream: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """`kflow run --local`: validate, start or reach Redis, run, print; return the exit code."""
    from kflow.api.errors import SpecError
    from kflow.sdk.handlers import HandlerError

    errors = err or sys.stderr
    try:
        run = prepare_local_run(flow_path, handlers_path, flow_id=flow_id)
    except SpecError as exc:
        write_spec_error(exc, errors)
        return EXIT_INVALID
    except HandlerError as exc:
        errors.write(f"error: {exc}\n")
        return EXIT_INVALID
    except OSError as exc:
        errors.write(f"error: cannot read {flow_path}: {exc}\n")
        return EXIT_INVALID

    async def main(url: str) -> int:
        task = asyncio.current_task()
        assert task is not None
        interrupt = asyncio.Event()

        def on_signal() -> None:
            if interrupt.is_set():  # asked twice: stop waiting for anything
                task.cancel()
            interrupt.set()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        try:
            return await execute_local_run(run, url, quiet=quiet, stream=stream,
                                           interrupt=interrupt)
        except (RunInterrupted, asyncio.CancelledError):
            errors.write("interrupted: running nodes are left to their leases; run the same "
                         "command again (same --redis) to resume\n")
            return EXIT_INTERRUPTED

    try:
        if redis_url is not None:
            return asyncio.run(main(redis_url))
        with private_redis() as url:
            return asyncio.run(main(url))
    except (OSError, RuntimeError, LookupError) as exc:  # LookupError: the flow vanished
        errors.write(f"error: {exc}\n")
        return EXIT_RUNTIME
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):
            errors.write(f"error: Redis at {redis_url or 'the private server'}: {exc}\n")
            return EXIT_RUNTIME
        raise
