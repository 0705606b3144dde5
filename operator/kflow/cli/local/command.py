"""`kflow run --local`: check the file, reach or start a Redis, run the flow, show it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kflow.api.ids import FlowId, QueueId
from kflow.cli.local.runner import DEFAULT_LEASE_MS, LocalRunner, RunInterrupted
from kflow.cli.local.view import JobLogForwarder, TreeView
from kflow.cli.redis_server import private_redis
from kflow.engine import Engine, FlowRef, QueueConfig, exit_flow_id, tune_collector
from kflow.graph.dag import CompiledFlow
from kflow.sdk.handlers import Handler
from kflow.store.connect import connect

if TYPE_CHECKING:
    from kflow.api import Flow, Queue
    from kflow.api.errors import SpecError
    from kflow.api.models import FlowTemplate

log = logging.getLogger("kflow.local")

# Queues the file declares no Queue object for: enough to overlap I/O-bound handlers.
DEFAULT_QUEUE_CONCURRENCY = 16
# A killed runner's nodes go back to ready without spending an attempt this many times.
LOCAL_MAX_STALLED = 3


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
    namespace: str, flow_queues: Iterable[str], queue_objects: Iterable[Queue]
) -> dict[QueueId, QueueConfig]:
    """QueueConfig per queue id for every queue the flow uses (defaults where no Queue is given)."""
    declared = {QueueId(queue.metadata.namespace or namespace, queue.metadata.name or ""): queue
                for queue in queue_objects}
    configs: dict[QueueId, QueueConfig] = {}
    for queue_name in sorted(flow_queues):
        queue_id = QueueId(namespace, queue_name)
        queue = declared.get(queue_id)
        configs[queue_id] = QueueConfig.of(
            queue.spec if queue is not None else None, max_stalled=LOCAL_MAX_STALLED,
            default_concurrency=DEFAULT_QUEUE_CONCURRENCY)
    return configs


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
    queues: list[Queue]
    handlers: dict[str, Handler]
    namespace: str
    name: str
    flow_uid: str


def _from_template(flow: Flow, templates: list[FlowTemplate], path: str | Path) -> Flow:
    """The Flow with the nodes of the FlowTemplate it names, which must be in the same file."""
    from kflow.api import Flow
    from kflow.api.errors import SpecError
    from kflow.graph.templates import expand

    assert flow.spec.template_ref is not None
    name = flow.spec.template_ref.name
    template = next((t for t in templates if t.metadata.name == name), None)
    if template is None:
        raise SpecError(flow.object_ref, "spec.templateRef.name",
                        f"spec.templateRef.name: {path} holds no FlowTemplate {name}; a local "
                        "run reads the template from the same file: add it there")
    document = flow.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return Flow.model_validate(expand(document, template))


def prepare_local_run(
    flow_path: str | Path, handlers_path: str | Path, *, flow_id: str | None = None
) -> LocalRun:
    """Parse and compile the file and load the handlers; raises SpecError / HandlerError.

    This touches no Redis: a run whose input is invalid writes nothing.
    """
    from kflow.api import Flow, Queue, load_manifests
    from kflow.api.errors import SpecError
    from kflow.api.manifests import MAX_LOCAL_MANIFEST_BYTES
    from kflow.api.models import FlowTemplate
    from kflow.graph import compile_flow
    from kflow.sdk.handlers import HandlerError, load_handlers

    objects = load_manifests(Path(flow_path), max_bytes=MAX_LOCAL_MANIFEST_BYTES)
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
    if flow.spec.template_ref is not None:
        flow = _from_template(flow, [o for o in objects if isinstance(o, FlowTemplate)],
                              flow_path)
    compiled = compile_flow(flow)
    handlers = load_handlers(handlers_path)
    namespace, name = flow_identity(flow)
    missing = sorted(q for q in all_queues(compiled) if q not in handlers)
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
    forwarder = JobLogForwarder(view)
    job_logger = logging.getLogger("kflow.job")
    job_logger.addHandler(forwarder)
    job_logger.setLevel(logging.INFO)
    job_logger.propagate = False
    redis = await connect(redis_url)
    try:
        engine = Engine(redis)
        for queue_id, config in queue_configs(run.namespace, all_queues(run.compiled),
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
        watcher = asyncio.create_task(_watch(view, engine, ref.id, stop_watching))
        try:
            try:
                # With exit handlers the workers go on serving: the flow's end puts the
                # exit nodes on the same queues, and they run there next.
                snapshot = await runner.run(run.flow_uid, run.namespace, run.compiled,
                                            resumed=not created,
                                            keep_serving=run.compiled.on_exit is not None)
            finally:
                stop_watching.set()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(watcher, timeout=5)
            infos = await engine.node_infos(ref.id) if snapshot.total <= 200_000 else {}
            await view.learn_shape(engine, ref.id, snapshot)
            view.final(snapshot, infos)
            if run.compiled.on_exit is not None:
                view = TreeView(run.compiled.on_exit, f"{run.namespace}/{run.name}",
                                stream=out, quiet=quiet, redraw=redraw,
                                heading="On exit of Flow")
                forwarder.view = view
                await _run_exit_handlers(run, engine, ref, runner, view)
        finally:
            await runner.close()
        # The exit handlers' outcome is shown, never the run's: the flow's phase decides.
        return EXIT_OK if snapshot.phase == "Succeeded" else EXIT_FLOW_FAILED
    finally:
        view.close()  # an interrupted run leaves no frame behind and gets its cursor back
        job_logger.removeHandler(forwarder)
        await redis.aclose()


def all_queues(compiled: CompiledFlow) -> frozenset[str]:
    """The queues of the flow and of its exit handlers: a local run serves them all."""
    if compiled.on_exit is None:
        return compiled.queues
    return compiled.queues | compiled.on_exit.queues


async def _run_exit_handlers(run: LocalRun, engine: Engine, ref: FlowRef, runner: LocalRunner,
                             view: TreeView) -> None:
    """Run the exit flow (spec.onExit) the flow's end started, and show its tree."""
    assert run.compiled.on_exit is not None
    # Started by the step that ended the flow; a runner killed in between starts it here.
    await engine.start_exit(ref.id)
    exit_id = exit_flow_id(ref.id)
    runner.on_event = view.node_event
    stop_watching = asyncio.Event()
    watcher = asyncio.create_task(_watch(view, engine, exit_id, stop_watching))
    try:
        snapshot = await runner.run(exit_id.uid, run.namespace, run.compiled.on_exit)
    finally:
        stop_watching.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(watcher, timeout=5)
    view.final(snapshot, await engine.node_infos(exit_id))


async def _watch(view: TreeView, engine: Engine, flow_id: FlowId, stop: asyncio.Event) -> None:
    # Stopped by an event rather than by cancelling: a cancellation that lands inside a Redis
    # call can be absorbed by the client, and the loop would go on.
    interval = 0.25 if view.redraw else 0.5
    while not stop.is_set():
        try:
            await view.poll(engine, flow_id, await engine.snapshot(flow_id))
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

    tune_collector()
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
