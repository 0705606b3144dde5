"""Kubernetes Events on Flows and on the operator's own Deployment, posted from one place in the
background (never delaying work) and aggregated like client-go's EventRecorder.

The same Event again (same object, type, reason and message) is not a new Event object: the
one already written gets its `count` and `lastTimestamp` raised (a PATCH), as `kubectl get
events` shows for the kubelet's `BackOff`. Writes of one Event are spaced by `interval`, so a
burst of identical events is one create and a few patches, with the exact count. When one
object gets more than `similar_limit` different messages of one reason within
`similar_window` seconds (1,000 nodes failing with 1,000 errors), the rest share one Event
"(combined from similar events): <latest message>", as client-go's aggregator does: the
number of Event objects per object and reason stays bounded. Memory is bounded by an LRU of
`cache_size` keys (client-go keeps 4,096).

kopf posts one Event per call (kopf._core.engines.posting, names from generateName); kflow
aggregates because a flow may fail the same way thousands of times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kflow.api.models import API_VERSION
from kflow.engine import EXIT_SUFFIX

log = logging.getLogger("kflow.kube.events")

COMPONENT = "kflow-operator"  # the Events' source, as `kubectl get events` shows it
COMBINED_PREFIX = "(combined from similar events): "
# The API server refuses a longer message; the combined prefix fits inside this bound too.
MAX_EVENT_MESSAGE = 1024


@dataclass(frozen=True)
class FlowEvent:
    """Something worth a Kubernetes Event on a Flow (a node failed for good, the flow ended)."""

    flow_uid: str
    namespace: str
    flow_name: str
    reason: str
    message: str
    warning: bool


class EventApi(Protocol):
    """The calls the poster makes (kflow.kube.k8s.KubeApi has them)."""

    async def create_event(self, involved: dict[str, Any], *, type: str, reason: str,
                           message: str, component: str, instance: str, count: int,
                           first: str, last: str) -> str: ...

    async def patch_event(self, namespace: str, name: str, *, count: int, last: str,
                          message: str) -> bool: ...


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Record:
    """One aggregated Event: what was counted, what the API server has, who writes it."""

    involved: dict[str, Any]
    type: str
    reason: str
    message: str
    first: str
    count: int = 0  # posts counted
    written: int = 0  # the count the Event object holds
    name: str | None = None  # the Event object, once created
    last_write: float = -1e9  # monotonic
    writer: asyncio.Task[None] | None = None


@dataclass
class _Similar:
    """The distinct messages one (object, type, reason) got in the current window."""

    since: float
    messages: set[str] = field(default_factory=set)


class EventPoster:
    """Posts aggregated Events in background tasks; a failed write is logged, never raised (an
    Event is a courtesy: the Flow's status says it too)."""

    def __init__(self, api: EventApi, *, identity: str, interval: float = 1.0,
                 cache_size: int = 4096, similar_limit: int = 10,
                 similar_window: float = 600.0) -> None:
        self._api = api
        self._identity = identity
        self._interval = interval
        self._cache_size = cache_size
        self._similar_limit = similar_limit
        self._similar_window = similar_window
        self._records: OrderedDict[tuple[str, ...], _Record] = OrderedDict()
        self._similar: OrderedDict[tuple[str, ...], _Similar] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, event: FlowEvent) -> None:
        involved = {"name": event.flow_name, "namespace": event.namespace,
                    "uid": event.flow_uid.removesuffix(EXIT_SUFFIX),  # exit handlers' too
                    "kind": "Flow", "apiVersion": API_VERSION}
        self.post_on(involved, reason=event.reason, message=event.message, warning=event.warning)

    def post_on(self, involved: dict[str, Any], *, reason: str, message: str,
                warning: bool) -> asyncio.Task[None]:
        """Count an Event on any object (`involved`: apiVersion, kind, name, namespace, uid)
        and have it written soon; the returned task ends once this post is written (or
        failed: it never raises), so a caller may await it or leave it."""
        type_ = "Warning" if warning else "Normal"
        message = message[:MAX_EVENT_MESSAGE]
        obj = (str(involved.get("namespace")), str(involved.get("kind")),
               str(involved.get("name")), str(involved.get("uid")))
        combined = self._too_many_similar((*obj, type_, reason), message)
        if combined:
            message = (COMBINED_PREFIX + message)[:MAX_EVENT_MESSAGE]
        key = (*obj, type_, reason, "" if combined else message, str(combined))
        record = self._records.get(key)
        if record is None:
            record = _Record(dict(involved), type_, reason, message, first=_timestamp())
            self._remember(self._records, key, record)
        else:
            self._records.move_to_end(key)
        record.message = message  # a combined Event shows the latest message
        record.count += 1
        if record.writer is None or record.writer.done():
            record.writer = self._spawn(self._write(record))
        return record.writer

    def _too_many_similar(self, key: tuple[str, ...], message: str) -> bool:
        now = time.monotonic()
        similar = self._similar.get(key)
        if similar is None or now - similar.since > self._similar_window:
            similar = _Similar(since=now)
            self._remember(self._similar, key, similar)
        else:
            self._similar.move_to_end(key)
        if message in similar.messages:
            return False
        if len(similar.messages) >= self._similar_limit:
            return True
        similar.messages.add(message)
        return False

    def _remember(self, cache: OrderedDict[tuple[str, ...], Any], key: tuple[str, ...],
                  value: Any) -> None:
        cache[key] = value
        while len(cache) > self._cache_size:
            cache.popitem(last=False)  # an Event evicted mid-write still finishes its write

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _write(self, record: _Record) -> None:
        """Bring the Event object up to the record's count, one write per `interval`."""
        involved = record.involved
        try:
            while record.written < record.count:
                wait = record.last_write + self._interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                count, now = record.count, _timestamp()
                record.last_write = time.monotonic()
                if record.name is not None and await self._api.patch_event(
                        involved["namespace"], record.name, count=count, last=now,
                        message=record.message):
                    record.written = count
                    continue
                # First of its kind, or the Event expired (the API server keeps them ~1 h):
                # a new object carries the count so far.
                record.name = await self._api.create_event(
                    involved, type=record.type, reason=record.reason, message=record.message,
                    component=COMPONENT, instance=self._identity, count=count,
                    first=record.first, last=now)
                record.written = count
        except Exception as exc:
            # Given up for now: the next post of this Event tries again with the full count.
            log.warning("could not post %s Event on %s %s/%s: %s", record.reason,
                        involved.get("kind"), involved.get("namespace"), involved.get("name"),
                        exc)

    def cached(self) -> int:
        """Keys held in memory (both LRUs)."""
        return len(self._records) + len(self._similar)

    async def drain(self) -> None:
        """Wait for every write under way (tests, and a clean shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
