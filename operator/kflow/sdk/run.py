"""`kflow-run module:function`: run one node attempt inside a pod and store its result."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from kflow.api.ids import FlowId
from kflow.api.pods import EXIT_INFRASTRUCTURE, TERMINATION_MESSAGE_LIMIT
from kflow.settings import RedisSettings

if TYPE_CHECKING:
    from kflow.engine import Engine

log = logging.getLogger("kflow.run")

EXIT_OK = 0
EXIT_HANDLER_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, what a shell reports for a terminated process
# Redis could not be reached before the handler ran or while its result was recorded: the
# operator retries the node without spending an attempt (kflow.kube.jobs.classify_failure).
EXIT_REDIS_UNREACHABLE = EXIT_INFRASTRUCTURE


class RunSettings(BaseSettings):
    """The attempt a pod runs, from the KFLOW_* variables the Job spec sets (read once).

    How to reach Redis is the shared `RedisSettings` group, read beside it.
    """

    model_config = SettingsConfigDict(env_prefix="KFLOW_", extra="ignore")

    flow_uid: str
    flow_name: str = ""
    namespace: str = "default"
    node: str
    queue: str = ""
    attempt: int = 1
    token: str
    # The node's data as JSON when it is small enough to travel in the pod spec; otherwise
    # it is read from Redis.
    data: str | None = None
    timeout_ms: int | None = None
    # Where a failure's message goes; Kubernetes shows it as the container's termination message.
    termination_log: str = "/dev/termination-log"
    # KFLOW_REDIS_PATIENCE_S: how long the pod keeps trying to record a finished handler's
    # result while Redis cannot be reached (a restart, a failover), before it exits with
    # EXIT_REDIS_UNREACHABLE and the operator runs the node again without spending an attempt.
    redis_patience_s: float = 120.0


def write_termination_message(path: str, text: str) -> None:
    """Leave `text` (cut to Kubernetes' limit) where the kubelet reads the termination message."""
    encoded = text.encode("utf-8", "replace")[:TERMINATION_MESSAGE_LIMIT]
    try:
        Path(path).write_bytes(encoded)
    except OSError as exc:  # outside a pod the path may not exist: the log line still carries it
        log.debug("cannot write the termination message to %s: %s", path, exc)


async def _node_data(engine: Engine, settings: RunSettings) -> Any:
    if settings.data is not None:
        return json.loads(settings.data)
    return await engine.node_data(FlowId.of(settings.namespace, settings.flow_uid),
                                  settings.node)


class RedisUnreachable(Exception):
    """Redis could not be reached for the pod's own bookkeeping (not the handler's)."""


async def with_patience(what: str, call: Callable[[], Awaitable[Any]], patience_s: float) -> Any:
    """`call()`, tried again while Redis cannot be reached, for up to `patience_s` seconds;
    then `RedisUnreachable`. Safe for kflow-run's calls: each is fenced by the attempt's token
    or only reads."""
    from kflow.store.connect import unreachable_reason

    deadline = time.monotonic() + patience_s
    wait = 0.5
    said = False
    while True:
        try:
            value = await call()
        except Exception as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                raise
            if time.monotonic() + wait > deadline:
                raise RedisUnreachable(f"{what}: Redis unreachable for {patience_s:.0f}s: "
                                       f"{reason}") from exc
            if not said:
                log.warning("%s: Redis unreachable (%s); trying again for up to %.0fs", what,
                            reason, patience_s)
                said = True
            await asyncio.sleep(wait)
            wait = min(wait * 2, 10.0)
            continue
        if said:
            log.warning("%s: Redis reachable again", what)
        return value


async def run_attempt(spec: str, settings: RunSettings, redis_settings: RedisSettings) -> int:
    """Run the handler named by `spec` for the attempt described by `settings`; exit code."""
    from kflow.sdk.handlers import resolve_function
    from kflow.store.connect import connect_to

    try:
        fn = resolve_function(spec)
    except ValueError as exc:
        message = f"kflow-run: {exc}"
        log.error("%s", message)
        write_termination_message(settings.termination_log, message)
        return EXIT_USAGE

    where = f"flow {settings.namespace}/{settings.flow_name} node {settings.node}"
    patience = settings.redis_patience_s
    try:
        redis = await with_patience(f"connecting for {where}",
                                    lambda: connect_to(redis_settings), patience)
    except Exception as exc:
        message = f"kflow-run: cannot reach Redis for {where}: {exc}"
        log.error("%s", message)
        write_termination_message(settings.termination_log, message)
        return EXIT_REDIS_UNREACHABLE if isinstance(exc, RedisUnreachable) \
            else EXIT_HANDLER_FAILED
    try:
        return await _run_connected(fn, settings, redis_settings, redis, where)
    except RedisUnreachable as exc:
        message = f"kflow-run: {exc}"
        log.error("%s", message)
        write_termination_message(settings.termination_log, message)
        return EXIT_REDIS_UNREACHABLE
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()


async def _run_connected(fn: Any, settings: RunSettings, redis_settings: RedisSettings,
                         redis: Any, where: str) -> int:
    from kflow.engine import Attempt, Engine
    from kflow.sdk.handlers import call_handler, format_error
    from kflow.sdk.job import Job

    patience = settings.redis_patience_s
    engine = Engine(redis, prefix=redis_settings.prefix, start_exits=False)
    attempt = Attempt(
        flow_uid=settings.flow_uid, namespace=settings.namespace,
        flow_name=settings.flow_name, node=settings.node, queue=settings.queue,
        attempt=settings.attempt, token=settings.token,
        data=await with_patience(f"reading the data of {where}",
                                 lambda: _node_data(engine, settings), patience),
        timeout_ms=settings.timeout_ms,
    )
    job = await with_patience(f"reading the inputs of {where}",
                              lambda: Job.for_attempt(engine, attempt), patience)
    task = asyncio.ensure_future(call_handler(fn, job))
    sigterm = asyncio.Event()

    def on_sigterm() -> None:
        sigterm.set()
        task.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    # Wait for the handler or the signal, whichever comes first: a cancellation that lands
    # inside a Redis call of the handler may be absorbed by the client.
    waiter = asyncio.ensure_future(sigterm.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if sigterm.is_set():
            raise asyncio.CancelledError
        value = task.result()
        json.dumps(value)  # a non-JSON output fails here, in the pod, with a clear error
    except asyncio.CancelledError:
        if not sigterm.is_set():
            raise
        await job.close()
        message = f"interrupted: SIGTERM while running {where}"
        log.warning("%s", message)
        write_termination_message(settings.termination_log, message)
        return EXIT_INTERRUPTED
    except Exception as exc:
        error = format_error(exc)
        log.error("%s failed: %s", where, error)
        job.log(f"failed: {error.splitlines()[0]}")
        await job.close()
        write_termination_message(settings.termination_log, error)
        return EXIT_HANDLER_FAILED
    finally:
        waiter.cancel()
        loop.remove_signal_handler(signal.SIGTERM)
    await job.close()
    flow_id = FlowId.of(settings.namespace, settings.flow_uid)
    # The handler's work is done: losing it to a Redis blip would spend the attempt (and
    # with one attempt fail the node). The write is fenced by the token, so trying again
    # is safe; past the patience the operator retries the node as an infrastructure failure.
    stored = await with_patience(
        f"recording the result of {where}",
        lambda: engine.store_result(flow_id, settings.node, settings.token, value), patience)
    if not stored:
        message = (f"{where}: result refused, attempt {settings.attempt} is no longer the "
                   "current one (a newer attempt owns the node)")
        log.error("%s", message)
        write_termination_message(settings.termination_log, message)
        return EXIT_HANDLER_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kflow-run",
        description="Run one kflow node attempt: call module:function(job) and store its "
                    "return value. The attempt comes from KFLOW_* environment variables.",
    )
    parser.add_argument("function", metavar="module:function")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = RunSettings()  # the fields come from the environment
        redis = RedisSettings()
        if not redis.url_given:
            raise ValueError("KFLOW_REDIS_URL is not set (the Job's pod gets it from the "
                             "Redis Secret)")
    except Exception as exc:
        message = f"kflow-run: missing or invalid KFLOW_* environment: {exc}"
        print(message, file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(run_attempt(args.function, settings, redis))


if __name__ == "__main__":
    sys.exit(main())
