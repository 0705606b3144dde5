"""The sealed store: typed methods over the Lua scripts and the plain reads of flow and queue
keys. It takes and returns domain values; key names, members and encodings stay in here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, TypeVar

from kflow.api.ids import FlowId, QueueId
from kflow.api.states import AddStatus, FlowPhase, NodeState
from kflow.graph.dag import item_name
from kflow.store.codec import (
    NodeChunk,
    NodeRoute,
    dumps,
    loads,
    reply_loads,
    text,
    unpack_map,
    unpack_spec,
    unpack_when,
)
from kflow.store.keys import (
    TOKEN_ANCHOR,
    FlowKeys,
    QueueKeys,
    active_member,
    flow_keys,
    queue_keys,
    queue_member,
    split_active,
    split_member,
)
from kflow.store.scripts import Scripts
from kflow.store.types import (
    AddedChildren,
    Completion,
    FlowMeta,
    FlowStep,
    Judgement,
    Lease,
    MapPlan,
    NodeInputs,
    QueueEntry,
    RedisClient,
    Settled,
    Started,
    decode_step,
    inputs_row,
    settled_row,
    started_row,
)

PAGE = 1000  # nodes per read or write call: keeps every call short for other clients
# The fields of a flow's meta hash FlowMeta reads (phase first: a flow without one is none).
_META_FIELDS = ["phase", "namespace", "name", "suspended", "total", "chunks", "written",
                "started_at", "finished_at", "expire_at", "queues", "defaults"]

R = TypeVar("R")


def _decode(raw: Any) -> Any:
    return reply_loads(raw)


def _rows(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {}.
    return value if isinstance(value, list) else []


def _added_row(r: Any) -> AddedChildren:
    status, detail = str(r[0]), str(r[1])
    names: tuple[str, ...] = ()
    if status in ("added", "already"):
        names = tuple(str(n) for n in _rows(loads(detail)))
    return AddedChildren(status, names, "" if names else detail)


def _map_row(r: Any) -> tuple[str, int]:
    return str(r[0]), int(r[1])


def _pair(r: Any) -> tuple[str, str]:
    return str(r[0]), str(r[1])


def _lease(queue_id: QueueId, uid: str, node: str, token: str) -> Lease:
    # Queue members name their flow by uid alone: a queue holds only its namespace's flows.
    return Lease(FlowId.of(queue_id.namespace, uid), node, token)


def _create_args(flow: FlowId, name: str, total: int, roots: int, ttl_seconds: int | None,
                 chunks: int, queues: list[str], defaults: dict[str, Any] | None) -> list[Any]:
    """ARGV of flow/create, which flow/add starts with (see flow/create.lua)."""
    return [flow.namespace, name, total, roots, -1 if ttl_seconds is None else ttl_seconds,
            chunks, dumps(sorted(queues)), "" if not defaults else dumps(defaults)]


def _active(lease: Lease) -> str:
    return active_member(lease.flow.uid, lease.node, lease.token)


def _enqueue_args(free: list[str], entries: Sequence[QueueEntry], hold: Sequence[str] = (),
                  lease_ms: int = 0) -> list[Any]:
    """ARGV of queue/enqueue: the active-set members to free, those to hold for `lease_ms`,
    then (member, rank, due) per entry (see queue/enqueue.lua)."""
    return [len(free), *free, len(hold), lease_ms, *hold,
            *(x for flow, q in entries for x in (queue_member(flow.uid, q.node), q.rank, q.due))]


def _add_outcome(got: Any) -> FlowPhase | AddStatus:
    """flow/add's reply: the new flow's phase, or RESUME / EXISTS when it was there."""
    return AddStatus(got) if got in ("resume", "exists") else FlowPhase(got)


def _events(entries: list[Any]) -> list[dict[str, str]]:
    """Stream entries as dicts, in order, each with its entry's id. An entry of a batch of a
    flow's events (lua/flow/_lib.lua: type and "nodes") holds one event per node; the log
    stream has no such entries."""
    out: list[dict[str, str]] = []
    for entry_id, raw_fields in entries:
        event_id = text(entry_id)
        fields = {text(k): text(v) for k, v in raw_fields.items()}
        batch = fields.pop("nodes", None)
        if batch is None:
            out.append({"id": event_id, **fields})
            continue
        for item in loads(batch):
            event = {"id": event_id, "type": fields["type"], "node": str(item[0])}
            event.update(zip(item[1::2], item[2::2], strict=True))
            out.append(event)
    return out


class RedisStore:
    """The only place that speaks Redis: one method per script, plus bounded reads."""

    def __init__(self, redis: RedisClient, *, prefix: str = "kflow") -> None:
        self.redis: Any = redis
        self.prefix = prefix
        self.scripts = Scripts(redis)

    def flow(self, flow: FlowId) -> FlowKeys:
        return flow_keys(self.prefix, flow)

    def queue(self, queue_id: QueueId) -> QueueKeys:
        return queue_keys(self.prefix, queue_id)

    async def _flow_script(self, verb: str, flow: FlowId, *args: Any) -> Any:
        return _decode(await self.scripts.run(f"flow/{verb}", self.flow(flow).all, list(args)))

    async def _flow_step(self, verb: str, flow: FlowId, row: Callable[[Any], R], *args: Any
                         ) -> FlowStep[R]:
        raw = await self.scripts.run(f"flow/{verb}", self.flow(flow).all, list(args))
        return decode_step(raw, row)

    async def _flow_scripts(self, verb: str, calls: list[tuple[FlowId, list[Any]]]) -> list[Any]:
        """One flow script on several flows, batched (`Scripts.run_many`); per call its
        raw reply, or the exception it raised."""
        if len(calls) == 1:  # one call: no pipeline to build
            flow, args = calls[0]
            try:
                return [await self.scripts.run(f"flow/{verb}", self.flow(flow).all, args)]
            except Exception as exc:  # reported per call, as run_many does
                return [exc]
        return await self.scripts.run_many(
            [(f"flow/{verb}", self.flow(flow).all, args) for flow, args in calls])

    async def _flow_steps(self, verb: str, calls: list[tuple[FlowId, list[Any]]],
                          row: Callable[[Any], R]) -> list[FlowStep[R] | BaseException]:
        replies = await self._flow_scripts(verb, calls)
        return [r if isinstance(r, BaseException) else decode_step(r, row) for r in replies]

    async def _queue_script(self, verb: str, queue_id: QueueId, args: list[Any]) -> Any:
        return _decode(await self.scripts.run(f"queue/{verb}", self.queue(queue_id).all, args))

    # ---- adding a flow -------------------------------------------------------------------

    async def create_flow(self, flow: FlowId, name: str, *, total: int, roots: int,
                          ttl_seconds: int | None, chunks: int, queues: list[str],
                          defaults: dict[str, Any] | None = None) -> AddStatus:
        return AddStatus(await self._flow_script(
            "create", flow, *_create_args(flow, name, total, roots, ttl_seconds, chunks, queues,
                                          defaults)))

    async def add_flow(self, flow: FlowId, name: str, *, total: int, roots: int,
                       ttl_seconds: int | None, queues: list[str],
                       defaults: dict[str, Any] | None, chunk: NodeChunk
                       ) -> FlowPhase | AddStatus:
        """Create, write (one chunk) and start a new small flow in one call (flow/add): its
        phase, or RESUME / EXISTS when the flow was there already (nothing written)."""
        return _add_outcome(await self._flow_script("add", flow, *self._add_args(
            flow, name, total, roots, ttl_seconds, queues, defaults, chunk)))

    @staticmethod
    def _add_args(flow: FlowId, name: str, total: int, roots: int, ttl_seconds: int | None,
                  queues: list[str], defaults: dict[str, Any] | None, chunk: NodeChunk
                  ) -> list[Any]:
        return [*_create_args(flow, name, total, roots, ttl_seconds, 1, queues, defaults),
                *chunk.args]

    async def add_flow_queued(self, flow: FlowId, name: str, *, total: int, roots: int,
                              ttl_seconds: int | None, queues: list[str],
                              defaults: dict[str, Any] | None, chunk: NodeChunk,
                              entries: dict[QueueId, list[QueueEntry]]
                              ) -> tuple[FlowPhase | AddStatus, bool]:
        """`add_flow`, and on one server the queue step of a new flow in the same round trip:
        `entries` (its ready leaves) go on their queues right after the add, in one pipeline
        (its calls run in order). Returns the add's outcome and whether the entries were
        queued; on a cluster, whose calls go to several servers in no set order, they are
        not (the caller queues them after a successful add).

        Only for entries the add makes ready: if the flow was there already, its leaves are
        queued as well, which is harmless (a member already queued keeps its place, and one
        whose node is not ready is refused when taken and dropped)."""
        import redis.asyncio

        args = self._add_args(flow, name, total, roots, ttl_seconds, queues, defaults, chunk)
        if not isinstance(self.redis, redis.asyncio.Redis) or \
                any(len(e) > PAGE for e in entries.values()):
            return await self.add_flow(flow, name, total=total, roots=roots,
                                       ttl_seconds=ttl_seconds, queues=queues,
                                       defaults=defaults, chunk=chunk), False
        replies = await self.scripts.run_many([
            ("flow/add", self.flow(flow).all, args),
            *(("queue/enqueue", self.queue(qid).all, _enqueue_args([], e))
              for qid, e in entries.items())])
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return _add_outcome(_decode(replies[0])), True

    async def add_nodes(self, flow: FlowId, chunk_no: int, chunk: NodeChunk) -> bool:
        """Write one chunk (codec.node_chunks) of a Pending flow; False if already written."""
        return bool(await self._flow_script("add-nodes", flow, chunk_no, *chunk.args)
                    == "written")

    async def activate(self, flow: FlowId) -> FlowPhase | Literal["incomplete"]:
        phase = await self._flow_script("activate", flow)
        return "incomplete" if phase == "incomplete" else FlowPhase(phase)

    # ---- attempts ----------------------------------------------------------------------

    async def start_attempts_many(
            self, owner: str, calls: list[tuple[FlowId, list[tuple[str, str]]]], *,
            with_inputs: bool = False) -> list[FlowStep[Started] | BaseException]:
        """Start attempts on several flows in one batch: (flow, (node, token) pairs) per call;
        per call one Started row per pair, or the exception of that call. `with_inputs`:
        each started row carries the node's inputs too (read in the same call)."""
        flag = "1" if with_inputs else "0"
        return await self._flow_steps(
            "start", [(flow, [owner, flag, *(x for pair in pairs for x in pair)])
                      for flow, pairs in calls], started_row)

    async def store_result(self, flow: FlowId, node: str, token: str, value: Any) -> bool:
        return bool(await self._flow_script("store-result", flow, node, token, dumps(value)))

    async def complete(self, calls: list[tuple[FlowId, list[Completion]]], *,
                       owners: Sequence[str] = ()) -> list[FlowStep[Settled] | BaseException]:
        """Complete attempts on several flows in one batch: (flow, completions) per call;
        per call one Settled row per completion, or the exception of that call.
        `owners[i]`, when given and not "": call i, of one completion, may hand over to that
        worker (lua/flow/complete.lua; the row's `handed`)."""
        return await self._flow_steps("complete", [
            (flow, [owners[i] if i < len(owners) else "", *(x for c in completions for x in (
                c.node, c.token, c.queue, "" if c.use_stored else dumps(c.value)))])
            for i, (flow, completions) in enumerate(calls)], settled_row)

    async def fail(self, flow: FlowId, node: str, token: str, error: str, *, infrastructure: bool,
                   infra_retries: int, jitter_share: float) -> FlowStep[Settled]:
        return await self._flow_step("fail", flow, settled_row, node, token, error,
                                     "1" if infrastructure else "0", infra_retries, jitter_share)

    async def stall_many(self, leases: list[Lease], *, max_stalled: int,
                         jitter_shares: list[float]) -> list[FlowStep[Settled] | BaseException]:
        """Settle expired leases on their flows in one batch: one Settled row each (not
        accepted when the lease was left over), or the exception of that call."""
        return await self._flow_steps("stall", [
            (lease.flow, [lease.node, lease.token, max_stalled, share])
            for lease, share in zip(leases, jitter_shares, strict=True)], settled_row)

    async def release(self, flow: FlowId, reason: str, pairs: list[tuple[str, str]]
                      ) -> FlowStep[Settled]:
        """Hand back (node, token) attempts of one flow: one Settled row per pair."""
        return await self._flow_step("release", flow, settled_row, reason,
                                     *(x for pair in pairs for x in pair))

    async def inputs(self, calls: list[tuple[FlowId, list[str]]]
                     ) -> list[list[NodeInputs] | BaseException]:
        """Inputs of several flows' nodes in one batch: (flow, nodes) per call -> per node, its
        children's values and the errors of its ignored and failed children."""
        replies = await self._flow_scripts("inputs", [(flow, list(nodes)) for flow, nodes in calls])
        return [r if isinstance(r, BaseException) else [inputs_row(x) for x in _rows(_decode(r))]
                for r in replies]

    async def values_of(self, flow: FlowId, children: list[str]) -> list[tuple[str, Any]]:
        """The values of completed nodes, read a page at a time: each one's result, or for a
        map node (which has none) its items' values."""
        keys = self.flow(flow)
        raw = await self._fields(keys.result, children)
        missing = [c for c, v in zip(children, raw, strict=True) if v is None]
        records = dict(zip(missing, await self._fields(keys.progress, missing), strict=True))
        out: list[tuple[str, Any]] = []
        for child, value in zip(children, raw, strict=True):
            record = loads(records.get(child)) if value is None else None
            if isinstance(record, dict) and "items" in record:
                out.append((child, await self.map_values(flow, child, int(record["items"]))))
            else:
                out.append((child, loads(value)))
        return out

    async def _node_fields(self, node: str, *hashes: str) -> list[Any]:
        """One node's field in each of several per-node hashes of one flow, in one round trip
        (one slot: the hashes share the flow's tag)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in hashes:
                pipe.hget(key, node)
            return list(await pipe.execute())

    # ---- map nodes (forEach) -------------------------------------------------------------

    async def map_plan(self, flow: FlowId, node: str) -> MapPlan:
        """One read of what expanding map node `node` needs (its from node's value too)."""
        keys = self.flow(flow)
        state, spec, data, record = await self._node_fields(
            node, keys.state, keys.spec, keys.data, keys.progress)
        source = None if spec is None else unpack_map(spec)
        from_value = None
        if source is not None and source.from_node is not None:
            from_value = loads(await self.redis.hget(keys.result, source.from_node))
        return MapPlan(
            state=None if state is None else NodeState.parse(text(state)), source=source,
            data=loads(data), added=0 if record is None else int(loads(record)["added"]),
            from_value=from_value)

    async def expand(self, flow: FlowId, node: str, items: int, first: int,
                     datas: list[str]) -> FlowStep[tuple[str, int]]:
        """Add map node `node`'s items first.. (their data JSON, in order): one row
        (status, items added so far); see lua/flow/expand.lua."""
        return await self._flow_step("expand", flow, _map_row, node, items, first, *datas)

    async def fail_map(self, flow: FlowId, node: str, error: str) -> FlowStep[bool]:
        """Map node `node` has no list to run over: it fails for good (lua/flow/fail-map)."""
        return await self._flow_step("fail-map", flow, bool, node, error)

    # ---- children added by running code ---------------------------------------------------

    async def add_children(self, flow: FlowId, node: str, token: str, target: str | None,
                           chunk: NodeChunk, queues: list[str]
                           ) -> FlowStep[AddedChildren]:
        """Add nodes (one chunk, codec.node_chunks) under `target` (None: the node itself),
        fenced by the adding attempt's token (lua/flow/add-children.lua)."""
        return await self._flow_step("add-children", flow, _added_row, node, token,
                                     target or "", dumps(sorted(queues)), *chunk.args)

    # ---- conditions (when) ----------------------------------------------------------------

    async def judgement(self, flow: FlowId, node: str) -> Judgement:
        """The node's state, condition and data, and its children's states."""
        keys = self.flow(flow)
        state, spec, data, children = await self._node_fields(
            node, keys.state, keys.spec, keys.data, keys.children)
        names = [str(c) for c in loads(children) or []]
        states = await self._fields(keys.state, names)
        return Judgement(
            state=None if state is None else NodeState.parse(text(state)),
            when=None if spec is None else unpack_when(spec), data=loads(data),
            outcomes={c: s for c, s in zip(names, states, strict=True) if s is not None})

    async def decide(self, flow: FlowId, node: str, verdict: Literal["run", "skip", "fail"],
                     why: str) -> FlowStep[bool]:
        """Run, skip or fail a deciding node (lua/flow/decide.lua); one row: decided."""
        return await self._flow_step("decide", flow, bool, node, verdict, why)

    async def map_values(self, flow: FlowId, node: str, items: int) -> list[Any]:
        """The values of map node `node`'s items in item order, read a page at a time
        (None for an item that has none: ignored, removed)."""
        names = [item_name(node, i) for i in range(items)]
        return await self.node_results(flow, names)

    async def update_progress(self, flow: FlowId, node: str, token: str, progress: Any) -> bool:
        return bool(await self._flow_script("progress", flow, node, token, dumps(progress)))

    async def log(self, flow: FlowId, node: str, token: str, message: str, cap: int) -> bool:
        return bool(await self._flow_script("log", flow, node, token, message, cap))

    # ---- pod logs (the tails of attempts' container logs, kept with the flow) ----------

    async def keep_pod_log(self, flow: FlowId, node: str, attempt: int, text: str, *,
                           failed: bool, flow_budget: int
                           ) -> Literal["kept", "over-budget", "no-flow"]:
        """Keep one attempt's log text (flow/keep-pod-log.lua): replaces that attempt's earlier
        text; not kept when the flow's texts would pass `flow_budget` bytes (half of it for
        a succeeded attempt) or the flow is not in Redis."""
        kept = await self._flow_script("keep-pod-log", flow, node, attempt, text,
                                       "1" if failed else "0", flow_budget)
        if kept not in ("kept", "over-budget", "no-flow"):
            raise ValueError(f"flow/keep-pod-log.lua answered {kept!r}")
        return kept  # type: ignore[no-any-return]

    async def attempt_logs(self, flow: FlowId, node: str) -> list[tuple[int, str]]:
        """(attempt, text) of every attempt of the node whose log was kept, oldest first."""
        key = self.flow(flow).podlogs
        last = await self.redis.hget(key, f"{node}|n")
        if last is None:
            return []
        attempts = range(1, int(last) + 1)
        texts = await self._fields(key, [f"{node}|{a}" for a in attempts])
        return [(a, t) for a, t in zip(attempts, texts, strict=True) if t is not None]

    async def pod_log_usage(self, flow: FlowId) -> tuple[int, int]:
        """(bytes of log text the flow keeps, attempts whose log was not kept: over budget)."""
        used, dropped = await self.redis.hmget(self.flow(flow).podlogs, ["bytes", "dropped"])
        return int(used or 0), int(dropped or 0)

    # ---- flow control -----------------------------------------------------------------

    async def suspend(self, flow: FlowId) -> FlowPhase:
        return (await self._flow_step("suspend", flow, _pair)).phase

    async def resume(self, flow: FlowId) -> FlowPhase:
        return (await self._flow_step("resume", flow, _pair)).phase

    async def cancel(self, flow: FlowId) -> FlowStep[tuple[str, str]]:
        """Cancel the flow: one (node, token) row per attempt still running."""
        return await self._flow_step("cancel", flow, _pair)

    async def cancel_unstarted(self, flow: FlowId, cursor: str, limit: int
                               ) -> tuple[list[tuple[str, str, int]], str, bool]:
        """One bounded step of cancelling an ended flow's unstarted nodes -> ((node, queue,
        rank) taken off the ready set, the cursor for the next step, done)."""
        unqueue, cursor, done = await self._flow_script("cancel-unstarted", flow, cursor, limit)
        return ([(str(r[0]), str(r[1]), int(r[2])) for r in _rows(unqueue)], str(cursor),
                bool(done))

    async def retry_failed(self, flow: FlowId) -> FlowStep[bool]:
        """Retry a Failed flow's failed nodes: one row, False when the flow is not Failed."""
        return await self._flow_step("retry-failed", flow, bool)

    async def delete(self, flow: FlowId) -> int:
        return int(await self._flow_script("delete", flow))

    # ---- exit handlers (spec.onExit) -----------------------------------------------------

    async def set_exit_graph(self, flow: FlowId, graph: str) -> None:
        """Keep the flow's exit graph (encoded by kflow.engine.exits) with its record, until
        the flow ends and its exit flow is added from it."""
        await self.redis.hset(self.flow(flow).meta, "exit", graph)

    async def exit_graph(self, flow: FlowId) -> tuple[str | None, int | None]:
        """(the exit graph kept with the flow or None, its ttlSecondsAfterFinished or None)."""
        graph, ttl = await self.redis.hmget(self.flow(flow).meta, ["exit", "ttl"])
        seconds = None if ttl is None or int(text(ttl)) < 0 else int(text(ttl))
        return (None if graph is None else text(graph)), seconds

    # ---- flow reads (bounded pages) ------------------------------------------------------

    async def meta(self, flow: FlowId) -> FlowMeta | None:
        """The flow's record; None when the flow is not in Redis. Read with HMGET, which a
        tenant's pods may send (store/acl.py), not HGETALL."""
        raw = await self.redis.hmget(self.flow(flow).meta, _META_FIELDS)
        if raw[0] is None:  # no phase: no flow
            return None
        return FlowMeta.decode({f: text(v) for f, v in zip(_META_FIELDS, raw, strict=True)
                                if v is not None})

    async def counts(self, flow: FlowId) -> dict[NodeState, int]:
        raw = await self.redis.hgetall(self.flow(flow).counts)
        return {NodeState.parse(text(k)): int(v) for k, v in raw.items() if int(v) != 0}

    async def failures(self, flow: FlowId) -> list[tuple[str, str, int]]:
        raw = await self.redis.lrange(self.flow(flow).failures, 0, -1)
        return [(str(n), str(e), int(a)) for n, e, a in (loads(x) for x in raw)]

    async def ready_pages(self, flow: FlowId) -> AsyncIterator[list[tuple[str, int]]]:
        """The flow's ready set as pages of (node, ready time or due ms), read with ZSCAN:
        takers may remove members meanwhile, and a scan still sees every member that stays."""
        cursor: int = 0
        key = self.flow(flow).ready
        while True:
            cursor, page = await self.redis.zscan(key, cursor, count=PAGE)
            if page:
                yield [(text(m), int(s)) for m, s in page]
            if int(cursor) == 0:
                return

    async def _fields(self, key: str, nodes: list[str]) -> list[str | None]:
        """HMGET of one per-node hash, paged."""
        out: list[str | None] = []
        for i in range(0, len(nodes), PAGE):
            raw = await self.redis.hmget(key, nodes[i:i + PAGE])
            out.extend(None if v is None else text(v) for v in raw)
        return out

    async def node_states(self, flow: FlowId, nodes: list[str]) -> list[NodeState | None]:
        """Each node's state; None for a node the flow does not have."""
        raw = await self._fields(self.flow(flow).state, nodes)
        return [None if s is None else NodeState.parse(s) for s in raw]

    async def node_specs(self, flow: FlowId, nodes: list[str]) -> list[NodeRoute | None]:
        raw = await self._fields(self.flow(flow).spec, nodes)
        return [None if s is None else unpack_spec(s) for s in raw]

    async def node_attempts(self, flow: FlowId, nodes: list[str]) -> list[int]:
        """Attempts started per node (0 for none)."""
        return [int(a or 0) for a in await self._fields(self.flow(flow).attempt, nodes)]

    async def node_results(self, flow: FlowId, nodes: list[str]) -> list[Any]:
        """Each node's return value (None when it has none)."""
        return [loads(v) for v in await self._fields(self.flow(flow).result, nodes)]

    async def node_times(self, flow: FlowId, nodes: list[str]
                         ) -> list[tuple[int | None, int | None]]:
        """Each node's (first start ms, settled ms) in this run of its flow; None where it
        has not (lua/flow/_lib.lua, note_time)."""
        out: list[tuple[int | None, int | None]] = []
        for raw in await self._fields(self.flow(flow).times, nodes):
            start, _, end = (raw or "").partition(" ")
            out.append((int(start) if start else None, int(end) if end else None))
        return out

    async def node_errors(self, flow: FlowId, nodes: list[str]) -> list[str | None]:
        return await self._fields(self.flow(flow).error, nodes)

    async def node_progress(self, flow: FlowId, nodes: list[str]) -> list[Any]:
        return [loads(v) for v in await self._fields(self.flow(flow).progress, nodes)]

    async def node_children(self, flow: FlowId, node: str) -> list[str]:
        raw = await self.redis.hget(self.flow(flow).children, node)
        return [] if raw is None else [str(c) for c in loads(raw)]

    async def node_data(self, flow: FlowId, node: str) -> Any:
        """The node's input (None without data)."""
        return loads(await self.redis.hget(self.flow(flow).data, node))

    async def active_tokens(self, flow: FlowId) -> dict[str, str]:
        """node -> token of the attempts running now (bounded by the queues' concurrency)."""
        raw = await self.redis.hgetall(self.flow(flow).token)
        return {node: text(v) for k, v in raw.items() if (node := text(k)) != TOKEN_ANCHOR}

    async def scan_states(self, flow: FlowId) -> list[tuple[str, NodeState]]:
        """Every node's state, read with HSCAN so no single call is long."""
        out: list[tuple[str, NodeState]] = []
        cursor: int = 0
        key = self.flow(flow).state
        while True:
            cursor, page = await self.redis.hscan(key, cursor, count=PAGE)
            out.extend((text(k), NodeState.parse(text(v))) for k, v in page.items())
            if int(cursor) == 0:
                return out

    async def state_page(self, flow: FlowId, cursor: str, count: int, *,
                         match: str | None = None) -> tuple[list[tuple[str, NodeState]], str]:
        """One HSCAN step over the flow's node states -> ((node, state) of about `count`
        nodes whose name matches the glob `match`, the cursor of the next step; "0": done).
        A node that stays in the flow is seen by a full scan at least once."""
        next_cursor, page = await self.redis.hscan(self.flow(flow).state, int(cursor),
                                                   match=match, count=count)
        return ([(text(k), NodeState.parse(text(v))) for k, v in page.items()],
                str(int(next_cursor)))

    async def node_parents(self, flow: FlowId, node: str) -> list[str]:
        raw = await self.redis.hget(self.flow(flow).parents, node)
        return [] if raw is None else [str(p) for p in loads(raw)]

    async def graph_page(self, flow: FlowId, cursor: str, count: int
                         ) -> tuple[list[tuple[str, NodeState, str, list[str]]], str]:
        """One HSCAN step over the flow's nodes with what drawing needs (flow/graph-page.lua)
        -> ((node, state, queue, children) per node, the next cursor; "0": done)."""
        next_cursor, raw = await self.scripts.run("flow/graph-page", self.flow(flow).all,
                                                  [cursor, count])
        rows = [(str(r[0]), NodeState.parse(r[1]), str(r[2]),
                 [str(c) for c in _rows(r[3])] if len(r) > 3 else [])
                for r in _rows(_decode(raw))]
        return rows, str(int(next_cursor))

    async def events_tail(self, flow: FlowId) -> str:
        """The id of the flow's latest event ("0-0" when it has none): where a reader that
        wants only what comes next starts."""
        raw = await self.redis.xrevrange(self.flow(flow).events, count=1)
        return text(raw[0][0]) if raw else "0-0"

    async def read_events(self, flow: FlowId, after: str, *, block_ms: int,
                          count: int) -> list[dict[str, str]]:
        """Up to `count` events of the flow after the stream id `after`, waiting up to
        `block_ms` for the first one (XREAD BLOCK); [] when none came."""
        raw = await self.redis.xread({self.flow(flow).events: after}, count=count,
                                     block=block_ms)
        # redis-py answers a list of [key, entries] (RESP2) or a dict key -> entries (RESP3).
        streams = raw.values() if isinstance(raw, dict) else [e for _, e in raw or []]
        return _events([entry for entries in streams for entry in entries])

    async def _stream(self, key: str, count: int) -> list[dict[str, str]]:
        """The events of the latest `count` entries of a stream, oldest first."""
        return _events(list(reversed(await self.redis.xrevrange(key, count=count))))

    async def logs(self, flow: FlowId, count: int) -> list[dict[str, str]]:
        """The latest lines of the flow's log stream (id, node, attempt, msg), oldest first."""
        return await self._stream(self.flow(flow).logs, count)

    async def events(self, flow: FlowId, count: int) -> list[dict[str, str]]:
        """The events of the latest `count` entries of the flow's event stream (id, type,
        node...), oldest first."""
        return await self._stream(self.flow(flow).events, count)

    # ---- queues ---------------------------------------------------------------------

    async def configure_queue(self, queue_id: QueueId, *, concurrency: int | None,
                              rate_max: int | None, rate_per_ms: int | None,
                              max_stalled: int) -> None:
        settings = {"concurrency": concurrency, "rate_max": rate_max,
                    "rate_per_ms": rate_per_ms, "max_stalled": max_stalled}
        key = self.queue(queue_id).config
        present = {k: v for k, v in settings.items() if v is not None}
        absent = [k for k, v in settings.items() if v is None]
        if present:
            await self.redis.hset(key, mapping=present)
        if absent:
            await self.redis.hdel(key, *absent)

    async def forget_queue(self, queue_id: QueueId) -> int:
        """A Queue was deleted: drop its settings and records (queue/forget.lua); returns how
        many nodes are still on it."""
        return int(await self._queue_script("forget", queue_id, []))

    async def max_stalled(self, queue_id: QueueId, default: int) -> int:
        """How many lease expiries a node of the queue may have (`default` if unset)."""
        raw = await self.redis.hget(self.queue(queue_id).config, "max_stalled")
        return default if raw is None else int(raw)

    async def enqueue(self, queue_id: QueueId, entries: list[QueueEntry],
                      drop: list[Lease] | None = None, hold: list[Lease] | None = None,
                      lease_ms: int = 0) -> int:
        """Put nodes on the queue (idempotent), first freeing the queue's hold on `drop`
        (settled attempts' active-set members) and holding `hold` for `lease_ms` (attempts
        started by handing over), in the same call; returns how many nodes were not on the
        queue yet."""
        added = 0
        free = [_active(lease) for lease in drop or ()]
        held = [_active(lease) for lease in hold or ()]
        for i in range(0, max(len(entries), 1 if free or held else 0), PAGE):
            added += int(await self._queue_script(
                "enqueue", queue_id, _enqueue_args(free, entries[i:i + PAGE], held, lease_ms)))
            free, held = [], []
        return added

    async def take(self, queue_id: QueueId, max_members: int, lease_ms: int,
                   tokens: list[str], *, promote: int = 0) -> tuple[list[Lease], int, bool]:
        """Hold up to `max_members` ready nodes under the given tokens -> (leases, ms until
        the rate limit frees a slot or 0, whether the queue has a rate limit); first move up
        to `promote` due delayed members to ready (one call for what `promote` and `take`
        did in two)."""
        taken, rate_wait, limited = await self._queue_script(
            "take", queue_id, [max_members, lease_ms, promote, *tokens])
        return ([_lease(queue_id, *split_member(m), t) for m, t in _rows(taken)],
                int(rate_wait), limited is True)

    async def promote(self, queue_id: QueueId, max_members: int) -> tuple[int, int | None]:
        moved, next_due = await self._queue_script("promote", queue_id, [max_members])
        return int(moved), None if int(next_due) < 0 else int(next_due)

    async def renew(self, queue_id: QueueId, lease_ms: int, leases: list[Lease]) -> int:
        return int(await self._queue_script(
            "renew", queue_id, [lease_ms, *(_active(lease) for lease in leases)]))

    async def expired_leases(self, queue_id: QueueId, max_members: int) -> list[Lease]:
        return [_lease(queue_id, *split_active(str(m))) for m in _rows(await self._queue_script(
            "expired-leases", queue_id, [max_members]))]

    async def unqueue(self, queue_id: QueueId, flow: FlowId, nodes: list[tuple[str, int]]
                      ) -> int:
        """Remove (node, rank) of one flow from the queue's ready and delayed sets."""
        q = self.queue(queue_id)
        ready = [queue_member(flow.uid, n) for n, _ in nodes]
        delayed = [f"{queue_member(flow.uid, n)}|{p}" for n, p in nodes]
        removed = int(await self.redis.zrem(q.ready, *ready))
        return removed + int(await self.redis.zrem(q.delayed, *delayed))

    async def takes(self, queue_id: QueueId, count: int = 10_000) -> list[tuple[int, int]]:
        """(server time ms, nodes taken) of the queue's latest take calls, oldest first."""
        raw = await self.redis.xrevrange(self.queue(queue_id).takes, count=count)
        rows = [{text(k): text(v) for k, v in fields.items()} for _, fields in reversed(raw)]
        return [(int(row["at"]), int(row["n"])) for row in rows]

    async def depth(self, queue_id: QueueId) -> tuple[int, int, int]:
        q = self.queue(queue_id)
        ready = await self.redis.zcard(q.ready)
        active = await self.redis.zcard(q.active)
        delayed = await self.redis.zcard(q.delayed)
        return int(ready), int(active), int(delayed)
