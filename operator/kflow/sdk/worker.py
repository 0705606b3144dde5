"""`kflow worker --queue ns/name module:function`: a long-lived loop that runs a queue's nodes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kflow.api.ids import QueueId
from kflow.engine import Attempt, Engine, Inputs, tune_collector
from kflow.sdk.handlers import call_handler, format_error, is_async_handler, resolve_function
from kflow.sdk.job import Job, JobFlow
from kflow.settings import RedisSettings
from kflow.store.codec import dumps
from kflow.store.outage import RedisOutage

log = logging.getLogger("kflow.worker")

EXIT_OK = 0
EXIT_USAGE = 2
IDLE_POLL_FIRST_S = 0.005  # the first wait after an empty take; doubles up to poll_max_s
RETRY_AFTER_ERROR_S = 1.0  # pause of a background loop after a Redis error
TAKES_IN_FLIGHT = 2  # takes a worker has out at once (each up to WorkerOptions.batch nodes)
# Handing over: a finished node keeps its slot for what its completion may hand over while
# more than KEEP_SLOTS_ABOVE of recent completions made a node ready (Worker._readying).
READYING_WEIGHT = 0.2
KEEP_SLOTS_ABOVE = 0.25


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker takes and holds nodes; every time is in milliseconds unless named _s."""

    concurrency: int = 10  # nodes this worker runs at once
    # Most nodes one take starts; default: half the concurrency, so that two batches are in
    # flight and Redis starts one while this process runs the other (bench/vs-bullmq: +20%
    # nodes/s over one batch of all free slots, which left Redis and the worker taking turns).
    batch: int | None = None
    lock_ms: int = 30_000  # lease of a taken node; a dead worker's nodes stall after this
    renew_ms: int | None = None  # lease renewal period; default lock_ms / 2
    stalled_interval_ms: int | None = None  # stalled-lease sweep period; default lock_ms
    grace_ms: int = 25_000  # after SIGTERM: time to finish held nodes before handing them back
    # Longest wait between takes while the queue is empty (what this worker's own completions
    # make ready is taken at once).
    poll_max_s: float = 0.1
    owner: str | None = None  # recorded with each attempt; default host:pid:random
    # A completion that makes the next node of its flow ready on this queue starts it here
    # at once, in the completion's own call, and this worker runs it next (a chain's steps
    # run one after another without the queue; lua/flow/complete.lua). Such a node goes
    # ahead of others waiting on the queue, whatever their priority; a queue with a rate
    # limit never hands over. False: every node goes through the queue.
    handover: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"worker concurrency {self.concurrency}: must be at least 1")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"worker batch {self.batch}: must be at least 1")
        if self.lock_ms < 100:
            raise ValueError(f"worker lock {self.lock_ms} ms: must be at least 100 ms")
        if self.renew_ms is not None and not 0 < self.renew_ms < self.lock_ms:
            raise ValueError(f"worker renew period {self.renew_ms} ms: must be above 0 and "
                             f"below the lock duration ({self.lock_ms} ms), or renewals come "
                             "too late to keep the lease")


# Told of each node's progress through this worker: (attempt, state, detail), where state is
# active | completed (detail: the value as compact JSON) | delayed | failed (detail: the error) |
# ready (detail: the name of a parent the completion made ready).
ProgressListener = Callable[[Attempt, str, str], None]


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**4):04x}"


class Worker:
    """Takes ready nodes of one queue in batches and runs `fn(job)` on each, renewing leases.

    Completions are batched (`Engine.complete_attempts`): while one batch is being
    written the next accumulates, so a busy worker pays one round trip per batch, an idle
    one per node. Rate limit and concurrency of the queue are enforced by the store on
    every take, so they hold across all workers; `concurrency` here is this worker's own cap.
    """

    def __init__(self, engine: Engine, queue_id: str, fn: Callable[..., Any],
                 options: WorkerOptions | None = None, *,
                 on_event: ProgressListener | None = None) -> None:
        try:
            self.queue_id = QueueId.parse(queue_id)
        except ValueError:
            raise ValueError(f'worker queue "{queue_id}": expected <namespace>/<queue>, '
                             'e.g. "default/extract"') from None
        self.engine = engine
        self.fn = fn
        self._fn_is_async = is_async_handler(fn)  # asked once: inspect costs ~5 µs a call
        self.options = options or WorkerOptions()
        self.owner = self.options.owner or default_owner()
        self.batch = self.options.batch or max(1, self.options.concurrency // 2)
        self.held: dict[tuple[str, str, str], Attempt] = {}  # leases to renew, until settled
        self.running: dict[asyncio.Task[None], Attempt] = {}  # handlers in progress
        self.stats: dict[str, int] = defaultdict(int)
        self.on_event = on_event
        self._stopping = False
        self._wake = asyncio.Event()
        self._done: list[tuple[Attempt, Any]] = []
        self._done_ready = asyncio.Event()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._reserved = 0  # slots promised to takes in flight and to completions in flight
        # Handing over (WorkerOptions.handover): a finished node keeps its slot until its
        # completion is written, for the node the completion may hand over (`_kept` of
        # them), while completions here tend to make their flow's next node ready:
        # `_readying` is the share of recent completions that did, a moving average over
        # completion batches (each weighing READYING_WEIGHT: chains advance in waves, and a
        # batch of their last steps, which make nothing ready, must not stop it). A
        # fan-out's leaves make nothing ready, and after a few batches their slots go
        # straight back to the takes, whose batches keep their size.
        self._kept = 0
        self._readying = 1.0
        self._idle = IDLE_POLL_FIRST_S  # the next wait after an empty take
        self._not_before = 0.0  # monotonic time before which no take starts (back-off)
        self._readied = 0  # completion batches that made nodes ready (a take seeing none
        # while one lands looks again at once instead of backing off)
        # Says once that Redis is unreachable and once that it is back, for all the loops.
        self.outage = RedisOutage()

    # ---- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking nodes; `run` then finishes or hands back what it holds and returns."""
        if not self._stopping:
            log.info("worker %s: stopping, %d nodes in progress", self.owner, len(self.running))
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Work until `stop()`; then wait up to the grace period and hand back the rest."""
        opts = self.options
        background = [
            asyncio.create_task(self._complete_loop(), name="kflow-complete"),
            asyncio.create_task(self._every(opts.renew_ms or opts.lock_ms // 2, self._renew),
                                name="kflow-renew"),
            asyncio.create_task(self._every(opts.stalled_interval_ms or opts.lock_ms,
                                            self._sweep_stalled, jitter=True),
                                name="kflow-stalled"),
        ]
        log.info("worker %s: queue %s, concurrency %d, lock %d ms", self.owner, self.queue_id,
                 opts.concurrency, opts.lock_ms)
        try:
            await self._take_loop()
            await self._shut_down()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        log.info("worker %s: stopped (%s)", self.owner, dict(self.stats))

    # ---- taking ----------------------------------------------------------------------------

    async def _take_loop(self) -> None:
        """Start takes while slots are free, up to TAKES_IN_FLIGHT at once: a take that is
        out does not keep the slots freed meanwhile idle (handlers that sleep on I/O free
        them one by one), and Redis starts one batch while this process runs another."""
        taking: set[asyncio.Task[None]] = set()
        while not self._stopping:
            wait = self._not_before - time.monotonic()
            if wait > 0:  # the queue was empty or Redis away: back off
                await self._sleep(wait)
                continue
            free = self.options.concurrency - len(self.running) - self._reserved - self._kept
            if free <= 0 or len(taking) >= TAKES_IN_FLIGHT:
                await self._sleep(None)
                continue
            want = min(free, self.batch)
            self._reserved += want
            task = asyncio.create_task(self._take(want))
            taking.add(task)
            task.add_done_callback(functools.partial(self._take_done, taking, want))
        if taking:  # what they took runs, or is handed back by the shutdown
            await asyncio.gather(*taking, return_exceptions=True)

    def _take_done(self, taking: set[asyncio.Task[None]], want: int,
                   task: asyncio.Task[None]) -> None:
        taking.discard(task)
        self._reserved -= want
        self._wake.set()

    async def _take(self, want: int) -> None:
        """Take up to `want` nodes and start a handler for each."""
        readied = self._readied
        try:
            attempts = await self.engine.take(self.queue_id, want, owner=self.owner,
                                              lease_ms=self.options.lock_ms, with_inputs=True)
        except Exception as exc:  # Redis away: keep the process, try again
            wait = self.outage.failed(exc, f"worker {self.owner} taking nodes")
            if wait is None:
                log.warning("worker %s: take failed: %s", self.owner, exc)
            self._not_before = time.monotonic() + (RETRY_AFTER_ERROR_S if wait is None else wait)
            return
        self.outage.succeeded()
        if not attempts:
            if self._readied != readied:  # a completion made nodes ready meanwhile: look again
                return
            self._not_before = time.monotonic() + self._idle
            self._idle = min(self._idle * 2, self.options.poll_max_s)
            return
        self._idle = IDLE_POLL_FIRST_S
        self.stats["taken"] += len(attempts)
        self._run_all(attempts)

    def _run_all(self, attempts: list[Attempt]) -> None:
        """Hold each attempt (its lease renewed) and start its handler."""
        loop, on_event = asyncio.get_running_loop(), self.on_event
        for a in attempts:
            self.held[(a.flow_uid, a.node, a.token)] = a
            task = loop.create_task(self._run_one(a, a.inputs))
            self.running[task] = a
            task.add_done_callback(self._handler_done)
            if on_event is not None:  # the detail is built only for a listener
                on_event(a, "active", f"attempt {a.attempt}")
        self.stats["max_running"] = max(self.stats["max_running"], len(self.running))

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task, None)
        self._wake.set()

    async def _sleep(self, seconds: float | None) -> None:
        """Wait for a free slot, a stop, or `seconds`, whichever comes first."""
        if self._stopping:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # ---- running one node ------------------------------------------------------------------

    async def _run_one(self, attempt: Attempt, inputs: Inputs | None) -> None:
        job: Job | None = None
        try:
            if inputs is None:
                job = await Job.for_attempt(self.engine, attempt)
            else:
                job = Job(flow=JobFlow(uid=attempt.flow_uid, namespace=attempt.namespace,
                                       name=attempt.flow_name),
                          name=attempt.node, queue=attempt.queue, attempt=attempt.attempt,
                          token=attempt.token, data=attempt.data, children_values=inputs[0],
                          ignored_failures=inputs[1], failed_children=inputs[2],
                          timeout_ms=attempt.timeout_ms,
                          sink=self.engine)
            call = call_handler(self.fn, job, is_async=self._fn_is_async)
            if attempt.timeout_ms is not None:
                value = await asyncio.wait_for(call, attempt.timeout_ms / 1000)
            else:
                value = await call
            dumps(value)  # a non-JSON output fails this attempt, as the store would encode it
        except asyncio.CancelledError:
            raise  # shutdown: the attempt is handed back, not failed
        except TimeoutError:
            await self._fail(attempt, f"timeout: the handler ran longer than "
                                      f"{attempt.timeout_ms} ms")
            return
        except Exception as exc:
            error = format_error(exc)
            if job is not None:
                job.log(f"failed: {error.splitlines()[0]}")
            await self._fail(attempt, error)
            return
        finally:
            if job is not None:
                await job.close()
        if self.options.handover and self._readying >= KEEP_SLOTS_ABOVE:
            self._kept += 1
        self._done.append((attempt, value))
        self._done_ready.set()
        self._flushed.clear()

    async def _fail(self, attempt: Attempt, error: str) -> None:
        where = f"flow {attempt.namespace}/{attempt.flow_name} node {attempt.node}"
        first_line = error.splitlines()[0] if error else error
        log.warning("%s attempt %d failed: %s", where, attempt.attempt, first_line)
        self.stats["failed"] += 1
        try:
            outcome = await self.engine.fail(attempt.flow_id, attempt.node, attempt.token,
                                             error)
        except Exception as exc:  # the lease runs out and the stalled sweep settles it
            log.warning("%s: recording the failure failed: %s", where, exc)
        else:
            if outcome.action == "retry":
                self._emit(attempt, "delayed", f"retry after: {first_line}")
            elif outcome.action != "stale":
                self._emit(attempt, "failed", first_line)
        self.held.pop((attempt.flow_uid, attempt.node, attempt.token), None)

    # ---- completing ------------------------------------------------------------------------

    async def _complete_loop(self) -> None:
        while True:
            await self._done_ready.wait()
            self._done_ready.clear()
            while self._done:
                batch, self._done = self._done, []
                await self._complete_batch(batch)
            self._flushed.set()

    async def _complete_batch(self, batch: list[tuple[Attempt, Any]]) -> None:
        # Slots for what the batch may hand over: those its nodes kept (_run_one), and what
        # is free besides.
        kept = min(self._kept, len(batch))
        self._kept -= kept
        handover = 0
        if self.options.handover and not self._stopping:
            free = self.options.concurrency - len(self.running) - self._reserved - self._kept
            handover = kept + max(0, min(len(batch) - kept, free))
        self._reserved += handover
        try:
            while True:
                # Until Redis takes it: the handlers' work is done, and a completion that
                # waits out an outage spends no attempt (the leases are renewed meanwhile by
                # the renew loop, or expire and the stalled sweep hands the nodes back).
                try:
                    outcomes = await self.engine.complete_attempts(
                        batch, owner=self.owner, handover=handover,
                        lease_ms=self.options.lock_ms)
                    self.outage.succeeded()
                    break
                except Exception as exc:  # fenced by token: sending the batch again is safe
                    wait = self.outage.failed(exc, f"worker {self.owner} completing nodes")
                    if wait is None:
                        log.warning("worker %s: completing %d nodes failed: %s; retrying",
                                    self.owner, len(batch), exc)
                    await asyncio.sleep(RETRY_AFTER_ERROR_S if wait is None else wait)
        finally:
            self._reserved -= handover
        if self.options.handover:
            made = sum(1 for o in outcomes if o.handed is not None or o.newly_ready)
            self._readying += READYING_WEIGHT * (made / len(batch) - self._readying)
        handed = [o.handed for o in outcomes if o.handed is not None]
        if handed:
            self.stats["handed"] += len(handed)
            self._run_all(handed)
        self._wake.set()  # the slots not handed over are free
        if any(outcome.newly_ready for outcome in outcomes):
            # What this batch made ready may be on this queue: take it now, not after the
            # back-off of a queue that was empty a moment ago (a chain step would wait it out).
            self._readied += 1
            self._not_before = 0.0
            self._idle = IDLE_POLL_FIRST_S
            self._wake.set()
        for (a, value), outcome in zip(batch, outcomes, strict=True):
            self.held.pop((a.flow_uid, a.node, a.token), None)
            if outcome.accepted:
                self.stats["completed"] += 1
                if self.on_event is not None:
                    compact = json.dumps(value, separators=(",", ":"), default=str)
                    self._emit(a, "completed", compact)
                    for parent in outcome.newly_ready:
                        self.on_event(a, "ready", parent)
            else:
                self.stats["refused"] += 1
                log.warning("flow %s/%s node %s: completion refused (lease lost and the node "
                            "went to another attempt, or a retried batch)", a.namespace,
                            a.flow_name, a.node)

    def _emit(self, attempt: Attempt, state: str, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(attempt, state, detail)

    # ---- leases ----------------------------------------------------------------------------

    async def _every(self, period_ms: int, action: Callable[[], Any], *,
                     jitter: bool = False) -> None:
        delay = period_ms / 1000 * (random.random() if jitter else 1.0)
        while True:
            await asyncio.sleep(delay)
            delay = period_ms / 1000
            try:
                await action()
            except Exception as exc:
                name = getattr(action, "__name__", "background step")
                if self.outage.failed(exc, f"worker {self.owner} {name}") is None:
                    log.warning("worker %s: %s failed: %s", self.owner, name, exc)

    async def _renew(self) -> None:
        if self.held:
            await self.engine.renew(list(self.held.values()), self.options.lock_ms)

    async def _sweep_stalled(self) -> None:
        stalled = await self.engine.release_stalled(self.queue_id)
        if stalled:
            self.stats["stalled_found"] += len(stalled)

    # ---- shutdown --------------------------------------------------------------------------

    async def _shut_down(self) -> None:
        """Finish what runs within the grace period, hand back the rest, flush completions."""
        grace_s = self.options.grace_ms / 1000
        deadline = time.monotonic() + grace_s
        running = list(self.running)
        if running:
            await asyncio.wait(running, timeout=grace_s)
        late = [(task, a) for task, a in list(self.running.items()) if not task.done()]
        for task, _ in late:
            task.cancel()  # a sync handler's thread runs on; its value is discarded
        if late:
            await asyncio.gather(*(task for task, _ in late), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flushed.wait(),
                                   max(1.0, deadline - time.monotonic()))
        back = [a for _, a in late]
        if back:
            try:
                released = await self.engine.release(back, f"worker {self.owner} shut down")
            except Exception as exc:  # their leases run out and the stalled sweep frees them
                log.warning("worker %s: handing back %d nodes failed: %s", self.owner,
                            len(back), exc)
            else:
                self.stats["handed_back"] += released
                log.info("worker %s: handed back %d nodes", self.owner, released)
            for a in back:
                self.held.pop((a.flow_uid, a.node, a.token), None)


# ---- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kflow worker",
        description="Run the nodes of one queue in a long-lived process: take ready nodes in "
                    "batches, call module:function(job) on each (as kflow-run does), renew "
                    "their locks while they run. SIGTERM: stop taking, finish within the "
                    "grace period, hand back the rest. Redis from --redis or KFLOW_REDIS_URL "
                    "(and the other KFLOW_REDIS_* settings: password, TLS, CA file, timeouts).",
    )
    parser.add_argument("function", metavar="module:function",
                        help="the handler, a dotted module or a .py file, then :function")
    parser.add_argument("--queue", required=True, metavar="NAMESPACE/NAME",
                        help="the queue whose nodes this worker runs, e.g. default/extract")
    parser.add_argument("--concurrency", type=int, default=10, metavar="N",
                        help="nodes run at once by this worker (default 10)")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="most nodes one take starts (default: half the concurrency, so "
                             "one batch runs while the next is being started)")
    parser.add_argument("--lock-ms", type=int, default=30_000, metavar="MS",
                        help="lock (lease) of a taken node; a dead worker's nodes are handed "
                             "to others after it (default 30000)")
    parser.add_argument("--renew-ms", type=int, default=None, metavar="MS",
                        help="renew held locks this often (default: half the lock)")
    parser.add_argument("--stalled-interval-ms", type=int, default=None, metavar="MS",
                        help="look for stalled nodes of the queue this often (default: the lock)")
    parser.add_argument("--grace-ms", type=int, default=25_000, metavar="MS",
                        help="after SIGTERM, time to finish held nodes before handing them back "
                             "(default 25000; keep it below the pod's terminationGracePeriod)")
    parser.add_argument("--no-handover", dest="handover", action="store_false",
                        help="send every node through the queue: a completion that makes its "
                             "flow's next node ready on this queue does not start it here at "
                             "once (which puts it ahead of nodes of other flows)")
    parser.add_argument("--redis", metavar="URL", default=None,
                        help="Redis URL (default: $KFLOW_REDIS_URL)")
    parser.add_argument("--prefix", default=None,
                        help="key prefix in Redis (default: $KFLOW_REDIS_PREFIX or kflow)")
    return parser


def worker_redis(args: argparse.Namespace, base: RedisSettings | None = None) -> RedisSettings:
    """How `kflow worker` reaches Redis: the KFLOW_REDIS_* settings (or `base`), with --redis
    and --prefix over them."""
    settings = base or RedisSettings()
    overrides = {key: value for key, value in (("url", args.redis), ("prefix", args.prefix))
                 if value}
    return settings.model_copy(update=overrides) if overrides else settings


async def run_worker(args: argparse.Namespace) -> int:
    """Serve the queue until SIGTERM or SIGINT; the exit code."""
    from kflow.store.connect import connect_to

    settings = worker_redis(args)
    if not settings.url_given:
        print("kflow worker: no Redis: pass --redis URL or set KFLOW_REDIS_URL", file=sys.stderr)
        return EXIT_USAGE
    try:
        fn = resolve_function(args.function)
        options = WorkerOptions(concurrency=args.concurrency, batch=args.batch,
                                lock_ms=args.lock_ms,
                                renew_ms=args.renew_ms,
                                stalled_interval_ms=args.stalled_interval_ms,
                                grace_ms=args.grace_ms, handover=args.handover)
    except ValueError as exc:
        print(f"kflow worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # connect() hands out a pool that waits for a free connection instead of failing.
    redis = await connect_to(settings)
    try:
        engine = Engine(redis, prefix=settings.prefix, start_exits=False)
        try:
            worker = Worker(engine, args.queue, fn, options)
        except ValueError as exc:
            print(f"kflow worker: {exc}", file=sys.stderr)
            return EXIT_USAGE
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()
        return EXIT_OK
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `kflow worker ...` (argv without the `worker` word)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with worker_runner() as runner:
        return runner.run(run_worker(args))


def worker_runner() -> asyncio.Runner:
    """The process set-up `kflow worker` runs in, for anything that must run a worker as it
    ships (bench/vs-bullmq): the collector tuned for a long loop (kflow.engine.heap; call
    it after imports and set-up) and the event loop of `event_loop_factory`."""
    tune_collector()
    return asyncio.Runner(loop_factory=event_loop_factory())


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when the "fast" extra is installed (bench/vs-bullmq measures
    both); None: asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
