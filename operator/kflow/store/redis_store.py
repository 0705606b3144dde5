"""Typed wrappers over the Lua scripts and the plain reads of flow and queue keys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from kflow.store.codec import text
from kflow.store.keys import FlowKeys, QueueKeys, flow_keys, queue_keys, queue_member
from kflow.store.scripts import Scripts

PAGE = 1000  # nodes per read or write call: keeps every call short for other clients


class Queued(NamedTuple):
    """A node the flow step made ready (due 0) or delayed (due ms): it goes on its queue."""

    node: str
    queue: str  # queue name, in the flow's namespace
    priority: int
    due: int


class Started(NamedTuple):
    """One row of start-19.lua."""

    node: str
    status: str  # ok | suspended | early | gone
    attempt: int  # priority when status is "early"
    data_json: str
    timeout_ms: int
    due: int


class NodeInputs(NamedTuple):
    """One row of inputs-19: (child, JSON value) of completed children, (child, error) of
    children ignored after failing, and (child, error) of children that failed for good."""

    values: list[tuple[str, str]]
    ignored: list[tuple[str, str]]
    failed: list[tuple[str, str]]


class FlowReply(NamedTuple):
    """What complete/fail/stall report: the outcome and the queue step the engine owes."""

    accepted: bool
    action: str
    retry_at_ms: int | None
    phase: str
    queued: list[Queued]
    namespace: str
    queue: str


def _decode(raw: Any) -> Any:
    return json.loads(raw)


def _rows(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {}.
    return value if isinstance(value, list) else []


def _queued(value: Any) -> list[Queued]:
    return [Queued(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in _rows(value)]


class RedisStore:
    """The only place that speaks Redis: one method per script, plus bounded reads."""

    def __init__(self, redis: Any, *, prefix: str = "kflow") -> None:
        self.redis = redis
        self.prefix = prefix
        self.scripts = Scripts(redis)

    def flow(self, uid: str) -> FlowKeys:
        return flow_keys(self.prefix, uid)

    def queue(self, queue_id: str) -> QueueKeys:
        return queue_keys(self.prefix, queue_id)

    async def _flow_script(self, verb: str, uid: str, *args: Any) -> Any:
        return _decode(await self.scripts.run(verb, self.flow(uid).all, list(args)))

    async def _flow_scripts(self, verb: str, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """One flow script on several flows, batched (`Scripts.run_many`); per call its
        decoded reply, or the exception it raised."""
        replies = await self.scripts.run_many(
            [(verb, self.flow(uid).all, args) for uid, args in calls])
        return [r if isinstance(r, BaseException) else _decode(r) for r in replies]

    # ---- adding a flow -------------------------------------------------------------------

    async def create_flow(self, uid: str, namespace: str, name: str, *, total: int, roots: int,
                          ttl_seconds: int | None, chunks: int, queues: list[str]) -> str:
        return str(await self._flow_script(
            "create", uid, namespace, name, total, roots,
            -1 if ttl_seconds is None else ttl_seconds, chunks, json.dumps(sorted(queues))))

    async def add_nodes(self, uid: str, chunk_no: int, flat_rows: list[str]) -> str:
        return str(await self._flow_script("add-nodes", uid, chunk_no, *flat_rows))

    async def activate(self, uid: str) -> str:
        return str(await self._flow_script("activate", uid))

    # ---- attempts ----------------------------------------------------------------------

    async def start_attempts(self, uid: str, owner: str,
                             pairs: list[tuple[str, str]]) -> tuple[str, str, list[Started]]:
        flat = [x for pair in pairs for x in pair]
        ns, name, rows = await self._flow_script("start", uid, owner, *flat)
        started = [Started(str(r[0]), str(r[1]), int(r[2]), str(r[3]), int(r[4]), int(r[5]))
                   for r in _rows(rows)]
        return str(ns), str(name), started

    async def start_attempts_many(self, owner: str, calls: list[tuple[str, list[tuple[str, str]]]]
                                  ) -> list[tuple[str, str, list[Started]] | BaseException]:
        """`start_attempts` on several flows in one batch: (uid, pairs) per call."""
        replies = await self._flow_scripts(
            "start", [(uid, [owner, *(x for pair in pairs for x in pair)])
                      for uid, pairs in calls])
        out: list[tuple[str, str, list[Started]] | BaseException] = []
        for r in replies:
            if isinstance(r, BaseException):
                out.append(r)
                continue
            ns, name, rows = r
            out.append((str(ns), str(name), [
                Started(str(x[0]), str(x[1]), int(x[2]), str(x[3]), int(x[4]), int(x[5]))
                for x in _rows(rows)]))
        return out

    async def store_result(self, uid: str, node: str, token: str, value_json: str) -> bool:
        return bool(await self._flow_script("store-result", uid, node, token, value_json))

    async def complete(self, uid: str, node: str, token: str, value_json: str | None) -> FlowReply:
        r = await self._flow_script("complete", uid, node, token,
                                    "0" if value_json is None else "1", value_json or "")
        return FlowReply(bool(r[0]), "completed" if r[0] else "stale", None, str(r[1]),
                         _queued(r[2]), str(r[3]), str(r[4]))

    async def complete_many(self, calls: list[tuple[str, list[tuple[str, str, str]]]]
                            ) -> list[tuple[str, str, list[tuple[bool, str]], list[Queued]]
                                      | BaseException]:
        """complete-many-19 on several flows in one batch: (uid, (node, token, value JSON)
        triples) per call -> (phase, namespace, (accepted, queue) per triple, nodes to
        queue), or the exception of that call."""
        replies = await self._flow_scripts(
            "complete-many", [(uid, [x for t in triples for x in t]) for uid, triples in calls])
        out: list[tuple[str, str, list[tuple[bool, str]], list[Queued]] | BaseException] = []
        for r in replies:
            if isinstance(r, BaseException):
                out.append(r)
                continue
            phase, ns, rows, queued = r
            out.append((str(phase), str(ns), [(bool(x[0]), str(x[1])) for x in _rows(rows)],
                        _queued(queued)))
        return out

    async def inputs(self, calls: list[tuple[str, list[str]]]
                     ) -> list[list[NodeInputs] | BaseException]:
        """inputs-19 on several flows in one batch: (uid, nodes) per call -> per node, its
        children's values and the errors of its ignored and failed children."""
        replies = await self._flow_scripts("inputs", [(uid, list(nodes)) for uid, nodes in calls])

        def pairs(flat: Any) -> list[tuple[str, str]]:
            items = _rows(flat)
            return [(str(items[i]), str(items[i + 1])) for i in range(0, len(items), 2)]

        return [r if isinstance(r, BaseException) else [
                    NodeInputs(pairs(x[0]), pairs(x[1]), pairs(x[2])) for x in _rows(r)]
                for r in replies]

    async def release(self, uid: str, reason: str, pairs: list[tuple[str, str]]
                      ) -> tuple[str, str, list[tuple[bool, str]], list[Queued]]:
        """release-19: (node, token) of one flow -> (phase, namespace, (released, queue) per
        pair, nodes to queue)."""
        flat = [x for pair in pairs for x in pair]
        phase, ns, rows, queued = await self._flow_script("release", uid, reason, *flat)
        return (str(phase), str(ns), [(bool(r[0]), str(r[1])) for r in _rows(rows)],
                _queued(queued))

    async def fail(self, uid: str, node: str, token: str, error: str, *, infrastructure: bool,
                   infra_retries: int, jitter_share: float) -> FlowReply:
        r = await self._flow_script("fail", uid, node, token, error,
                                    "1" if infrastructure else "0", infra_retries, jitter_share)
        retry_at = int(r[1]) if r[1] is not False else None
        return FlowReply(r[0] != "stale", str(r[0]), retry_at, str(r[2]), _queued(r[3]),
                         str(r[4]), str(r[5]))

    async def stall(self, uid: str, node: str, token: str, *, max_stalled: int,
                    jitter_share: float) -> tuple[str, str, list[Queued]]:
        r = await self._flow_script("stall", uid, node, token, max_stalled, jitter_share)
        return str(r[0]), str(r[1]), _queued(r[2])

    async def update_progress(self, uid: str, node: str, token: str, progress_json: str) -> bool:
        return bool(await self._flow_script("progress", uid, node, token, progress_json))

    async def log(self, uid: str, node: str, token: str, message: str, cap: int) -> bool:
        return bool(await self._flow_script("log", uid, node, token, message, cap))

    # ---- flow control -----------------------------------------------------------------

    async def suspend(self, uid: str) -> str:
        return str(await self._flow_script("suspend", uid))

    async def resume(self, uid: str) -> str:
        return str(await self._flow_script("resume", uid))

    async def cancel(self, uid: str) -> tuple[str, list[tuple[str, str]]]:
        phase, active = await self._flow_script("cancel", uid)
        return str(phase), [(str(n), str(t)) for n, t in _rows(active)]

    async def cancel_unstarted(self, uid: str, cursor: str, limit: int
                               ) -> tuple[list[tuple[str, str, int]], str, bool]:
        """cancel-unstarted-19: one bounded step -> ((node, queue, priority) taken off the
        ready set, the cursor for the next step, done)."""
        unqueue, cursor, done = await self._flow_script("cancel-unstarted", uid, cursor, limit)
        return ([(str(r[0]), str(r[1]), int(r[2])) for r in _rows(unqueue)], str(cursor),
                bool(done))

    async def retry_failed(self, uid: str) -> int:
        return int(await self._flow_script("retry-failed", uid))

    async def delete(self, uid: str) -> int:
        return int(await self._flow_script("delete", uid))

    # ---- flow reads (bounded pages) ------------------------------------------------------

    async def meta(self, uid: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.flow(uid).meta)
        return {text(k): text(v) for k, v in raw.items()}

    async def counts(self, uid: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self.flow(uid).counts)
        return {text(k): int(v) for k, v in raw.items() if int(v) != 0}

    async def failures(self, uid: str) -> list[tuple[str, str, int]]:
        raw = await self.redis.lrange(self.flow(uid).failures, 0, -1)
        return [(str(n), str(e), int(a)) for n, e, a in (json.loads(x) for x in raw)]

    async def ready_pages(self, uid: str) -> AsyncIterator[list[tuple[str, int]]]:
        """The flow's ready set as pages of (node, ready time or due ms), read with ZSCAN:
        takers may remove members meanwhile, and a scan still sees every member that stays."""
        cursor: int = 0
        key = self.flow(uid).ready
        while True:
            cursor, page = await self.redis.zscan(key, cursor, count=PAGE)
            if page:
                yield [(text(m), int(s)) for m, s in page]
            if int(cursor) == 0:
                return

    async def fields(self, uid: str, key_name: str, nodes: list[str]) -> list[str | None]:
        """HMGET of one per-node hash (state, spec, result...), paged."""
        key = getattr(self.flow(uid), key_name)
        out: list[str | None] = []
        for i in range(0, len(nodes), PAGE):
            raw = await self.redis.hmget(key, nodes[i:i + PAGE])
            out.extend(None if v is None else text(v) for v in raw)
        return out

    async def field(self, uid: str, key_name: str, node: str) -> str | None:
        raw = await self.redis.hget(getattr(self.flow(uid), key_name), node)
        return None if raw is None else text(raw)

    async def active_tokens(self, uid: str) -> dict[str, str]:
        """node -> token of the attempts running now (bounded by the queues' concurrency)."""
        raw = await self.redis.hgetall(self.flow(uid).token)
        return {text(k): text(v) for k, v in raw.items()}

    async def scan_states(self, uid: str) -> list[tuple[str, str]]:
        """Every node's state, read with HSCAN so no single call is long."""
        out: list[tuple[str, str]] = []
        cursor: int = 0
        key = self.flow(uid).state
        while True:
            cursor, page = await self.redis.hscan(key, cursor, count=PAGE)
            out.extend((text(k), text(v)) for k, v in page.items())
            if int(cursor) == 0:
                return out

    async def stream(self, uid: str, key_name: str, count: int) -> list[dict[str, str]]:
        raw = await self.redis.xrevrange(getattr(self.flow(uid), key_name), count=count)
        return [
            {"id": text(entry_id), **{text(k): text(v) for k, v in fields.items()}}
            for entry_id, fields in reversed(raw)
        ]

    # ---- queues ---------------------------------------------------------------------

    async def configure_queue(self, queue_id: str, settings: dict[str, int | None]) -> None:
        key = self.queue(queue_id).config
        present = {k: v for k, v in settings.items() if v is not None}
        absent = [k for k, v in settings.items() if v is None]
        if present:
            await self.redis.hset(key, mapping=present)
        if absent:
            await self.redis.hdel(key, *absent)

    async def queue_config(self, queue_id: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self.queue(queue_id).config)
        return {text(k): int(v) for k, v in raw.items()}

    async def enqueue(self, queue_id: str, items: list[tuple[str, int, int]]) -> int:
        q = self.queue(queue_id)
        added = 0
        for i in range(0, len(items), PAGE):
            flat = [x for item in items[i:i + PAGE] for x in item]
            added += int(_decode(await self.scripts.run(
                "enqueue", (q.ready, q.delayed, q.seq), flat)))
        return added

    async def take(self, queue_id: str, max_members: int, lease_ms: int,
                   tokens: list[str]) -> tuple[list[tuple[str, str]], int]:
        q = self.queue(queue_id)
        taken, rate_wait = _decode(await self.scripts.run(
            "take", (q.ready, q.active, q.config, q.rate, q.takes),
            [max_members, lease_ms, *tokens]))
        return [(str(m), str(t)) for m, t in _rows(taken)], int(rate_wait)

    async def promote(self, queue_id: str, max_members: int) -> tuple[int, int | None]:
        q = self.queue(queue_id)
        moved, next_due = _decode(await self.scripts.run(
            "promote", (q.delayed, q.ready, q.seq), [max_members]))
        return int(moved), None if int(next_due) < 0 else int(next_due)

    async def renew(self, queue_id: str, lease_ms: int, members: list[str]) -> int:
        return int(_decode(await self.scripts.run(
            "renew", (self.queue(queue_id).active,), [lease_ms, *members])))

    async def expired_leases(self, queue_id: str, max_members: int) -> list[str]:
        return [str(m) for m in _rows(_decode(await self.scripts.run(
            "expired-leases", (self.queue(queue_id).active,), [max_members])))]

    async def unqueue(self, queue_id: str, uid: str, nodes: list[tuple[str, int]]) -> int:
        """Remove (node, priority) of one flow from the queue's ready and delayed sets."""
        q = self.queue(queue_id)
        ready = [queue_member(uid, n) for n, _ in nodes]
        delayed = [f"{queue_member(uid, n)}|{p}" for n, p in nodes]
        removed = int(await self.redis.zrem(q.ready, *ready))
        return removed + int(await self.redis.zrem(q.delayed, *delayed))

    async def drop_active(self, queue_id: str, members: list[str]) -> int:
        if not members:
            return 0
        return int(await self.redis.zrem(self.queue(queue_id).active, *members))

    async def takes(self, queue_id: str, count: int = 10_000) -> list[tuple[int, int]]:
        """(server time ms, nodes taken) of the queue's latest take calls, oldest first."""
        raw = await self.redis.xrevrange(self.queue(queue_id).takes, count=count)
        rows = [{text(k): text(v) for k, v in fields.items()} for _, fields in reversed(raw)]
        return [(int(row["at"]), int(row["n"])) for row in rows]

    async def depth(self, queue_id: str) -> tuple[int, int, int]:
        q = self.queue(queue_id)
        ready = await self.redis.zcard(q.ready)
        active = await self.redis.zcard(q.active)
        delayed = await self.redis.zcard(q.delayed)
        return int(ready), int(active), int(delayed)
