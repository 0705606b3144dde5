"""Per-queue dispatch loops: woken by events, they take ready nodes and launch them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kflow.api.ids import QueueId
from kflow.api.models import Queue
from kflow.engine import Attempt, Engine, QueueConfig
from kflow.store.outage import RedisOutage

log = logging.getLogger("kflow.kube.dispatch")


@dataclass
class QueueInfo:
    """A Queue object as the operator runs it: the Queue parsed once by the api model, and
    what Kubernetes adds to it (uid, the external-scaler annotation)."""

    queue: Queue
    uid: str | None = None
    external_scaler: bool = False  # Worker mode, pool sized by KEDA/HPA/a person, not by kflow

    @property
    def queue_id(self) -> QueueId:
        return self.queue.queue_id

    @property
    def namespace(self) -> str:
        return self.queue_id.namespace

    @property
    def name(self) -> str:
        return self.queue_id.name

    @property
    def mode(self) -> str:
        return self.queue.spec.mode

    @property
    def template(self) -> dict[str, Any]:
        return dict(self.queue.spec.template or {})

    @property
    def config(self) -> QueueConfig:
        """Concurrency and rate limit as the engine takes them (max_stalled is the operator's)."""
        return QueueConfig.of(self.queue.spec)


class FlowRoutes:
    """Which queue each node of each admitted flow is on: which dispatcher a node wakes."""

    def __init__(self) -> None:
        self._node_queues: dict[str, dict[str, str]] = {}  # flow uid -> node -> queue name
        self._queue_names: dict[str, frozenset[str]] = {}  # flow uid -> the queues it uses

    def add(self, flow_uid: str, node_queues: Mapping[str, str],
            queue_names: Iterable[str]) -> None:
        self._node_queues[flow_uid] = dict(node_queues)
        self._queue_names[flow_uid] = frozenset(queue_names)

    def forget(self, flow_uid: str) -> None:
        self._node_queues.pop(flow_uid, None)
        self._queue_names.pop(flow_uid, None)

    def knows(self, flow_uid: str) -> bool:
        return flow_uid in self._node_queues

    def queue_of(self, flow_uid: str, node: str) -> str | None:
        return self._node_queues.get(flow_uid, {}).get(node)

    def node_queues(self, flow_uid: str) -> frozenset[str]:
        """The queue names the flow's nodes are on."""
        return frozenset(self._node_queues.get(flow_uid, {}).values())

    def queue_names(self) -> list[tuple[str, frozenset[str]]]:
        """(flow uid, the queues it uses) of every admitted flow."""
        return list(self._queue_names.items())


LaunchFn = Callable[[QueueInfo, Attempt], Awaitable[None]]
HousekeepFn = Callable[[QueueId], Awaitable[None]]


class Dispatchers:
    """One wake-up event per queue; `run` is the loop of one queue, started per Queue object."""

    def __init__(self, engine: Engine, *, identity: str, batch: int, lease_ms: int,
                 idle_recheck: float, outage: RedisOutage | None = None) -> None:
        self.engine = engine
        # Shared with the operator's other loops that touch Redis (pools, status patcher).
        self.outage = outage or RedisOutage()
        self.identity = identity
        self.batch = batch
        self.lease_ms = lease_ms
        self.idle_recheck = idle_recheck
        self.queues: dict[QueueId, QueueInfo] = {}
        self._kicks: dict[QueueId, asyncio.Event] = {}
        self._pool_kicks: dict[QueueId, asyncio.Event] = {}

    def _event(self, queue_id: QueueId) -> asyncio.Event:
        event = self._kicks.get(queue_id)
        if event is None:
            event = self._kicks[queue_id] = asyncio.Event()
        return event

    def pool_wakeup(self, queue_id: QueueId) -> asyncio.Event:
        """An event `kick` also sets, for the queue's worker-pool loop (it clears its own)."""
        event = self._pool_kicks.get(queue_id)
        if event is None:
            event = self._pool_kicks[queue_id] = asyncio.Event()
        return event

    def kick(self, queue_id: QueueId) -> None:
        """Something may have become ready (or capacity freed) on this queue: look now."""
        self._event(queue_id).set()
        pool = self._pool_kicks.get(queue_id)
        if pool is not None:
            pool.set()

    def kick_namespace(self, namespace: str) -> None:
        for queue_id in list(self.queues):
            if queue_id.namespace == namespace:
                self.kick(queue_id)

    async def run(self, queue_id: QueueId, stopped: Any, launch: LaunchFn,
                  housekeep: HousekeepFn) -> None:
        """Dispatch ready nodes of one queue until `stopped` (a kopf daemon flag) is set."""
        kick = self._event(queue_id)
        last_housekeeping = 0.0
        while not stopped:
            kick.clear()
            queue = self.queues.get(queue_id)
            timeout: float | None = self.idle_recheck
            if queue is not None and queue.mode == "Job":
                try:
                    if time.monotonic() - last_housekeeping >= self.lease_ms / 3000:
                        last_housekeeping = time.monotonic()
                        await housekeep(queue_id)
                    next_due = await self.engine.promote_due(queue_id)
                    attempts = await self.engine.take(queue_id, self.batch, owner=self.identity,
                                                      lease_ms=self.lease_ms)
                    self.outage.succeeded()
                    if attempts:
                        await asyncio.gather(*(launch(queue, a) for a in attempts))
                    if len(attempts) >= self.batch:
                        continue  # more may be waiting: no sleep between full batches
                    if next_due is not None:
                        timeout = min(timeout or 1e9, max(0.0, next_due / 1000 - time.time()))
                    if queue.config.rate_max:
                        # Short of a full batch: the window may be used up (or the queue
                        # empty, or full): look again when the next window opens, not
                        # only on a kick, which never comes while nothing finishes.
                        timeout = min(timeout or 1e9, await self._rate_wait(queue))
                except Exception as exc:
                    wait = self.outage.failed(exc, f"dispatch of queue {queue_id}")
                    if wait is None:
                        log.exception("dispatch of queue %s failed; retrying", queue_id)
                    timeout = 1.0 if wait is None else wait
            timeout = min(timeout or 1e9, self.lease_ms / 3000)
            await wait_any(kick, stopped, timeout)

    async def _rate_wait(self, queue: QueueInfo) -> float:
        """How long to wait when a rate limit (not an empty queue) held nodes back."""
        ready, active, _delayed = await self.engine.queue_depth(queue.queue_id)
        config = queue.config
        if ready == 0 or (config.concurrency is not None and active >= config.concurrency):
            return self.idle_recheck  # empty, or full: an event will wake us
        per = (config.rate_per_ms or 1000) / max(1, config.rate_max or 1)
        return min(5.0, max(0.05, per / 1000))


async def wait_any(event: asyncio.Event, stopped: Any, timeout: float) -> None:
    async def until_stopped() -> None:
        await stopped.wait()  # a kopf flag: wait() returns an awaitable, not a coroutine

    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(event.wait())]
    if hasattr(stopped, "wait"):
        waiters.append(asyncio.ensure_future(until_stopped()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
