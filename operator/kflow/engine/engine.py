"""Scheduling over the store: add flows, hand out ready nodes, settle attempts, repair crashes."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from kflow.api.errors import SpecError, error_lines
from kflow.api.ids import FlowId, QueueId
from kflow.api.models import API_VERSION
from kflow.api.states import (
    ENDED_EARLY_PHASES,
    QUEUEABLE_STATES,
    TERMINAL_PHASES,
    AddStatus,
    FlowPhase,
    NodeState,
    StartStatus,
)
from kflow.engine.exits import (
    decode_graph,
    encode_graph,
    exit_flow_id,
    flow_outcome,
    is_exit_flow,
    with_outcome,
)
from kflow.engine.types import (
    MISSING,
    TERMINAL_STATES,
    Attempt,
    ChildrenError,
    CompleteOutcome,
    FailOutcome,
    FlowNotFound,
    FlowRef,
    FlowSnapshot,
    FlowStateError,
    Inputs,
    NodeDetail,
    NodeFailure,
    NodeInfo,
    NodeNotFound,
    NodePage,
    NodeRow,
    QueueConfig,
)
from kflow.graph.conditions import ConditionError, compile_condition
from kflow.graph.dag import CompiledFlow, split_item_name
from kflow.graph.fold import GraphNode
from kflow.graph.maps import MapListError, list_at
from kflow.graph.verdict import check_manifest
from kflow.store import (
    NO_INPUTS,
    PAGE,
    Completion,
    FlowStep,
    Lease,
    NodeChunk,
    NodeInputs,
    Queued,
    QueueEntry,
    RedisStore,
    Settled,
    Started,
    handed_token,
    item_chunk,
    node_chunks,
    queue_rank,
)

if TYPE_CHECKING:
    from kflow.store import RedisClient

log = logging.getLogger(__name__)

CHUNK_NODES = 500  # nodes per add-nodes call: a few ms of Redis time each
MAX_ADDED_CHILDREN = 1000  # nodes one add_children call writes, in one fenced script call
CHUNK_BYTES = 512 * 1024  # and at most about this many bytes of arguments
INFRA_RETRIES = 5  # infrastructure failures per node that do not spend an attempt
LOG_CAP = 10_000  # approximate length of a flow's log stream
ERROR_CAP = 4096  # characters of an error text kept
STALL_PAGE = 100  # expired leases settled per batch
# A filtered node page scans at most this many times its limit of states before it answers
# with what it found and a cursor: a search for a rare state stays a bounded request.
SCAN_BUDGET = 20
NODE_LOG_LINES = 1000  # latest lines of the flow's log searched for one node's lines


def _new_tokens(n: int) -> list[str]:
    """n attempt tokens (16 hex digits each) from one read of the system's random source."""
    hexed = secrets.token_hex(8 * n)
    return [hexed[i:i + 16] for i in range(0, 16 * n, 16)]


class _Owed(NamedTuple):
    """The queue step one flow step owes (see `Engine._queue_step`)."""

    flow_id: FlowId
    phase: FlowPhase  # the flow's phase after the step
    namespace: str
    leases: Sequence[tuple[QueueId, Lease]]  # (queue id, lease) to free
    queued: Sequence[Queued]  # made ready or delayed: onto their queues if Running
    settled: bool  # the step settled an attempt: if it ended the flow, wind the flow down
    expand: Sequence[str] = ()  # map nodes the step made ready: add their items
    decide: Sequence[str] = ()  # nodes whose condition the step made ready to judge
    # Whether an ended flow may have exit handlers to start: a step's reply says exactly
    # (FlowStep.exits); elsewhere True, and start_exit reads the flow to find out.
    exits: bool = True
    # Attempts the step started by handing over (queue id, lease): held in the same call
    # that frees `leases` (lua/queue/enqueue.lua), for the lease time of the queue step.
    holds: Sequence[tuple[QueueId, Lease]] = ()


def _after_settling(flow_id: FlowId, step: FlowStep[Settled], attempts: Sequence[tuple[str, str]]
                    ) -> _Owed:
    """What a step that settled (node, token) attempts owes: free the accepted ones' leases,
    queue what it made ready."""
    leases = [(step.queue_id(row.queue), Lease(flow_id, node, token))
              for (node, token), row in zip(attempts, step.rows, strict=True) if row.accepted]
    return _Owed(flow_id, step.phase, step.namespace, leases, step.queued, bool(leases),
                 step.expand, step.decide, step.exits)


def _log_added(flow: FlowRef, compiled: CompiledFlow) -> None:
    log.info("flow %s/%s added: %d nodes", flow.namespace, flow.name, len(compiled.nodes))


def _with_items(nodes: dict[str, GraphNode]) -> list[GraphNode]:
    """The graph with each map node's items (`<map>[<i>]`, whose one parent it is) among
    its children, in item order and before its other children: the store lists a node's
    children, and a map node's items are not in its list."""
    items: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name in nodes:
        item = split_item_name(name)
        if item is not None and item[0] in nodes:
            items[item[0]].append((item[1], name))
    for head, found in items.items():
        node = nodes[head]
        nodes[head] = replace(node, children=(*(n for _, n in sorted(found)), *node.children))
    return list(nodes.values())


def _compile_children(flow_id: FlowId, node: str, children: Sequence[Mapping[str, Any]],
                      defaults: dict[str, Any] | None) -> CompiledFlow:
    """Children a running node adds, checked as a Flow's nodes are and given its defaults
    (ChildrenError)."""
    spec: dict[str, Any] = {"nodes": [dict(c) for c in children]}
    if defaults:
        spec["defaults"] = defaults
    try:
        compiled = check_manifest({
            "apiVersion": API_VERSION, "kind": "Flow",
            "metadata": {"name": "added", "namespace": flow_id.namespace},
            "spec": spec}).compiled
    except SpecError as exc:
        text = "; ".join(line.split(": ", 1)[-1].replace("spec.nodes", "children")
                         for line in error_lines(exc))
        raise ChildrenError(f'node "{node}" cannot add these children: {text}') from None
    assert compiled is not None  # a Flow document always compiles or raises
    return compiled


class Engine:
    """The flow engine over one Redis (single server or cluster); holds no flow state of its
    own (it remembers only which queues its takes found rate-limited: `complete_attempts`)."""

    def __init__(self, redis: RedisClient, *, prefix: str = "kflow",
                 start_exits: bool = True) -> None:
        self.store = RedisStore(redis, prefix=prefix)
        # Whether a step that ends a flow starts its exit handlers here: the operator and the
        # local runner do; node pods and worker pods leave it to the operator (which sees
        # every flow's end) and need no right to read a flow's failures list.
        self.start_exits = start_exits
        self.chunk_nodes = CHUNK_NODES
        self.infra_retries = INFRA_RETRIES
        # Queue -> whether its latest take here found a rate limit: a completion on such a
        # queue (or one not taken from here) does not hand over, which would start a node
        # the limit has not counted.
        self.rate_limited: dict[QueueId, bool] = {}

    # ---- queues ------------------------------------------------------------------------

    async def configure_queue(self, queue_id: QueueId, config: QueueConfig) -> None:
        if (config.rate_max is None) != (config.rate_per_ms is None):
            raise ValueError(f"queue {queue_id}: rate_max and rate_per_ms go together; "
                             "set both or neither")
        await self.store.configure_queue(
            queue_id, concurrency=config.concurrency, rate_max=config.rate_max,
            rate_per_ms=config.rate_per_ms, max_stalled=config.max_stalled)

    async def forget_queue(self, queue_id: QueueId) -> int:
        """The Queue was deleted: its settings and records leave Redis; nodes still on it
        stay (their flows wait for a Queue of that name). Returns how many there are."""
        return await self.store.forget_queue(queue_id)

    async def queue_depth(self, queue_id: QueueId) -> tuple[int, int, int]:
        """(ready, active, delayed) members of the queue."""
        return await self.store.depth(queue_id)

    async def queue_takes(self, queue_id: QueueId, count: int = 10_000) -> list[tuple[int, int]]:
        """(server time ms, nodes started) per take call of the queue, oldest first (bounded).

        The queue's own record of starts: what its rate limit is judged against.
        """
        return await self.store.takes(queue_id, count)

    async def _queue_step(self, owed: Iterable[_Owed], *, lease_ms: int = 0) -> int:
        """The queue step owed after flow steps, for a batch across flows, one call per queue:
        free the leases the steps ended, hold for `lease_ms` the attempts they started by
        handing over, put on their queues the nodes they made ready or delayed, then wind
        down each flow a step ended before all its nodes settled.

        Nodes made ready in a flow that is not Running (suspended, failed) stay on the
        flow's ready set only; resume and retry re-queue them by reconciliation. Returns how
        many queue entries were added.
        """
        owed = list(owed)
        drop: dict[QueueId, list[Lease]] = defaultdict(list)
        hold: dict[QueueId, list[Lease]] = defaultdict(list)
        enqueue: dict[QueueId, list[QueueEntry]] = defaultdict(list)
        ended: list[FlowId] = []
        expand: list[tuple[FlowId, str]] = []
        decide: list[tuple[FlowId, str]] = []
        for o in owed:
            expand.extend((o.flow_id, node) for node in o.expand)
            decide.extend((o.flow_id, node) for node in o.decide)
            for queue_id, lease in o.leases:
                drop[queue_id].append(lease)
            for queue_id, lease in o.holds:
                hold[queue_id].append(lease)
            if o.phase is FlowPhase.RUNNING:
                for q in o.queued:
                    enqueue[QueueId.of(o.namespace, q.queue)].append((o.flow_id, q))
            elif o.settled and o.phase in ENDED_EARLY_PHASES:
                ended.append(o.flow_id)
        # One call per queue: free the settled attempts' holds, hold the attempts handed
        # over (a completion and what it handed over are on one queue), then queue what is
        # ready.
        added = sum(await asyncio.gather(*(
            self.store.enqueue(qid, enqueue.get(qid, []), drop.get(qid), hold.get(qid),
                               lease_ms)
            for qid in dict.fromkeys([*drop, *enqueue]))))
        for flow_id in ended:
            await self._wind_down(flow_id)
        for flow_id, node in expand:
            added += await self.expand(flow_id, node)
        # A step that leaves a flow ended starts its exit handlers (once: see start_exit).
        if self.start_exits:
            for flow_id in dict.fromkeys(o.flow_id for o in owed
                                         if o.phase in TERMINAL_PHASES and o.exits):
                await self.start_exit(flow_id)
        for flow_id, node in decide:
            added += await self.decide(flow_id, node)
        return added

    # ---- children added by running code ---------------------------------------------------

    async def add_children(self, flow_id: FlowId, node: str, token: str,
                           children: Sequence[Mapping[str, Any]], parent: str | None = None
                           ) -> list[str]:
        """Add `children` (node specs as a Flow's `spec.nodes` holds them) under `parent`, a
        node waiting for its children, or under the running node itself (parent None: it
        then runs again once they are done, and that run's value is its value).

        Checked like a static spec (names, queues, options, data, cycles; they may refer
        only to each other) and fenced by the attempt's token: once an attempt of this run
        has added, a later attempt adds nothing and gets the names that were added, so a node
        retried after a crash ends up with one set of children. Returns the added names.
        Raises ChildrenError for children that cannot be added, FlowStateError for an
        attempt that no longer holds its node.
        """
        if not children:
            raise ChildrenError(f'node "{node}": add_children needs at least one child')
        if len(children) > MAX_ADDED_CHILDREN:
            raise ChildrenError(
                f'node "{node}": add_children takes at most {MAX_ADDED_CHILDREN:,} nodes in '
                f"one call ({len(children):,} given); run a large fan-out as a forEach node")
        meta = await self.store.meta(flow_id)
        compiled = _compile_children(flow_id, node, children,
                                     None if meta is None else meta.defaults)
        target = parent or node
        nodes = [replace(n, parents=(target,)) if not n.parents else n
                 for n in compiled.nodes.values()]
        if len(nodes) > MAX_ADDED_CHILDREN:
            raise ChildrenError(
                f'node "{node}": add_children takes at most {MAX_ADDED_CHILDREN:,} nodes in '
                f"one call, inline children included ({len(nodes):,} given)")
        [chunk] = node_chunks(nodes, len(nodes), 1 << 62)
        step = await self.store.add_children(flow_id, node, token, parent, chunk,
                                             sorted(compiled.queues))
        [row] = step.rows
        if row.status == "stale":
            raise FlowStateError(f'node "{node}": this attempt no longer holds the node (it '
                                 "was retried, settled or the flow ended); nothing was added")
        if row.status == "target":
            raise ChildrenError(
                f'node "{node}" cannot add children to "{parent}": {row.detail}; a node adds '
                "children to itself or to a parent waiting for its children")
        if row.status == "exists":
            raise ChildrenError(
                f'node "{node}": the flow already has a node named "{row.detail}"; give added '
                "children names the flow does not use")
        await self._queue_step([_Owed(flow_id, step.phase, step.namespace, (), step.queued,
                                      False, step.expand, step.decide)])
        return list(row.names)

    # ---- conditions (when) ----------------------------------------------------------------

    async def decide(self, flow_id: FlowId, node: str) -> int:
        """Judge the condition of a deciding node against its children's values and outcomes
        and its data: run it, skip it (false) or fail it (the condition cannot be evaluated).
        Idempotent: a node no longer deciding is left alone. Returns queue entries added."""
        judged = await self.store.judgement(flow_id, node)
        if judged.state is not NodeState.DECIDING or judged.when is None:
            return 0
        [(values, _, _)] = await self.inputs_many(flow_id, [node])
        verdict: Literal["run", "skip", "fail"]
        try:
            holds = compile_condition(judged.when).evaluate(values, judged.outcomes,
                                                            judged.data)
        except ConditionError as exc:
            verdict, why = "fail", str(exc)
        else:
            verdict = "run" if holds else "skip"
            why = "" if holds else f'when "{judged.when}" was false'
        step = await self.store.decide(flow_id, node, verdict, why[:ERROR_CAP])
        return await self._queue_step([_Owed(flow_id, step.phase, step.namespace, (),
                                             step.queued, verdict != "run", step.expand,
                                             step.decide)])

    # ---- map nodes (forEach) -------------------------------------------------------------

    async def expand(self, flow_id: FlowId, node: str) -> int:
        """Add the items of map node `node` in bounded chunks and queue them; returns how
        many queue entries were added.

        Idempotent and resumable: each chunk says where it starts and is refused unless the
        map node has exactly that many items, so an expansion cut off by a crash goes on from
        there when anyone calls this again (reconcile_flow does), and two expanders at once
        never add an item twice. A from node whose value holds no list at the path fails
        the map node with a message naming both.
        """
        plan = await self.store.map_plan(flow_id, node)
        if plan.state is not NodeState.EXPANDING or plan.source is None:
            return 0
        source = plan.source
        try:
            if source.from_node is not None:
                items: Sequence[Any] = list_at(node, source, plan.from_value)
            elif source.items is not None:
                items = source.items
            else:
                items = range(source.count or 0)
        except MapListError as exc:
            reply = await self.store.fail_map(flow_id, node, str(exc))
            log.warning("flow %s: %s", flow_id, exc)
            return await self._queue_step([_Owed(flow_id, reply.phase, reply.namespace, (),
                                                 reply.queued, bool(reply.rows[0]),
                                                 reply.expand, reply.decide)])
        total, added, first = len(items), 0, plan.added
        while True:
            datas = item_chunk(plan.data, items, first, self.chunk_nodes, CHUNK_BYTES)
            step = await self.store.expand(flow_id, node, total, first, datas)
            status, done = step.rows[0]
            added += await self._queue_step([_Owed(flow_id, step.phase, step.namespace, (),
                                                   step.queued, False, step.expand,
                                                   step.decide)])
            if status == "gone" or done >= total:
                return added
            first = done  # "behind": someone else added up to there; go on from it

    # ---- adding a flow -------------------------------------------------------------------

    def _chunks(self, compiled: CompiledFlow) -> list[NodeChunk]:
        return node_chunks(compiled.nodes.values(), self.chunk_nodes, CHUNK_BYTES)

    async def submit(self, flow: FlowRef, compiled: CompiledFlow, *,
                     ttl_seconds_after_finished: int | None = None,
                     suspended: bool = False) -> bool:
        """Write the graph in bounded chunks, start it, queue its leaves.

        Idempotent: False if the flow is already in Redis. A flow left Pending by an
        interrupted add is completed by calling submit again. `suspended` starts it
        suspended: its leaves stay on the flow's ready set, off their queues, until resume,
        so no taker can start one in between (suspending after submit could be too late).
        """
        if not compiled.nodes:
            raise ValueError(f"Flow {flow.namespace}/{flow.name}: spec.nodes is empty; "
                             "a flow needs at least one node")
        chunks = self._chunks(compiled)
        if len(chunks) == 1 and compiled.on_exit is None and not suspended:
            # A small new flow: created, written and started in one call (flow/add.lua);
            # leaves that are plainly ready go on their queues in the same round trip.
            entries = self._fresh_leaves(flow, compiled)
            how: dict[str, Any] = dict(
                total=len(compiled.nodes), roots=len(compiled.roots),
                ttl_seconds=ttl_seconds_after_finished, queues=sorted(compiled.queues),
                defaults=compiled.defaults, chunk=chunks[0])
            if entries is None:
                added, queued = await self.store.add_flow(flow.id, flow.name, **how), False
            else:
                added, queued = await self.store.add_flow_queued(flow.id, flow.name,
                                                                 entries=entries, **how)
            if added is AddStatus.EXISTS:
                return False
            if added is not AddStatus.RESUME:
                if not queued:
                    await self._queue_leaves(flow, compiled, AddStatus.CREATED)
                _log_added(flow, compiled)
                return True
            # else: an interrupted chunked add of this flow (chunk size changed?): finish it
        created = await self.store.create_flow(
            flow.id, flow.name, total=len(compiled.nodes),
            roots=len(compiled.roots), ttl_seconds=ttl_seconds_after_finished,
            chunks=len(chunks), queues=sorted(compiled.queues), defaults=compiled.defaults)
        if created is AddStatus.EXISTS:
            return False
        if compiled.on_exit is not None:  # kept before activation: a running flow has it
            await self.store.set_exit_graph(flow.id, encode_graph(compiled.on_exit))
        if created is AddStatus.RESUME:
            meta = await self.store.meta(flow.id)
            stored = -1 if meta is None else meta.chunks
            if stored != len(chunks):
                raise FlowStateError(
                    f"Flow {flow.namespace}/{flow.name}: an interrupted add split the graph "
                    f"into {stored} chunks, this add into {len(chunks)} (chunk size changed); "
                    "delete the flow from Redis and add it again")
        for number, chunk in enumerate(chunks, start=1):
            await self.store.add_nodes(flow.id, number, chunk)
        phase = await self.store.activate(flow.id)
        if phase != FlowPhase.RUNNING:
            raise FlowStateError(f"Flow {flow.namespace}/{flow.name}: activation left it "
                                 f"{phase}; add it again to finish writing it")
        if suspended:
            await self.store.suspend(flow.id)
            log.info("flow %s/%s added suspended: %d nodes in %d chunks", flow.namespace,
                     flow.name, len(compiled.nodes), len(chunks))
            return True
        await self._queue_leaves(flow, compiled, created)
        _log_added(flow, compiled)
        return True

    @staticmethod
    def _fresh_leaves(flow: FlowRef, compiled: CompiledFlow
                      ) -> dict[QueueId, list[QueueEntry]] | None:
        """The queue entries of a new flow's leaves when each is plainly ready (no start
        delay, no forEach, no condition): exactly what its first queue step adds. None when
        one is not: that flow is queued after its add (`_queue_leaves`)."""
        leaves = [compiled.nodes[name] for name in compiled.leaves]
        if any(n.opts.delay_ms > 0 or n.for_each is not None or n.when is not None
               for n in leaves):
            return None
        out: dict[QueueId, list[QueueEntry]] = defaultdict(list)
        for n in leaves:
            out[QueueId.of(flow.namespace, n.queue)].append(
                (flow.id, Queued(n.name, n.queue, queue_rank(n.opts.priority, n.opts.lifo), 0)))
        return dict(out)

    async def _queue_leaves(self, flow: FlowRef, compiled: CompiledFlow,
                            created: AddStatus) -> None:
        """Put a flow that just started on its queues."""
        leaves = [compiled.nodes[name] for name in compiled.leaves]
        if created is AddStatus.CREATED and all(n.opts.delay_ms <= 0 for n in leaves):
            # Fresh flow, no start delays: its leaves are exactly the ready set (and the map
            # leaves, which expand), so they go on their queues without reading it back
            # (four round trips fewer per flow).
            await self._queue_step([_Owed(
                flow.id, FlowPhase.RUNNING, flow.namespace, (),
                [Queued(n.name, n.queue, queue_rank(n.opts.priority, n.opts.lifo), 0)
                 for n in leaves if n.for_each is None and n.when is None], False,
                [n.name for n in leaves if n.for_each is not None and n.when is None],
                [n.name for n in leaves if n.when is not None])])
        else:
            await self.reconcile_flow(flow.id)

    async def reconcile_flow(self, flow_id: FlowId) -> int:
        """Put every ready or delayed node of a running flow on its queue (idempotent).

        Repairs a crash between a flow step and its queue step, and re-queues after resume
        and retry. Returns how many queue entries were missing and are now added.
        """
        meta = await self.store.meta(flow_id)
        if meta is not None and meta.phase in TERMINAL_PHASES:
            # Ended: a crash between the end and its exit handlers' start is repaired here.
            if self.start_exits:
                await self.start_exit(flow_id)
            return 0
        if meta is None or meta.shown_phase is not FlowPhase.RUNNING:
            return 0
        added = 0
        async for page in self.store.ready_pages(flow_id):
            nodes = [n for n, _ in page]
            states = await self.store.node_states(flow_id, nodes)
            specs = await self.store.node_specs(flow_id, nodes)
            queued = [Queued(node, spec.queue, spec.rank,
                             score if state is NodeState.DELAYED else 0)
                      for (node, score), state, spec in zip(page, states, specs, strict=True)
                      if spec is not None and state in QUEUEABLE_STATES]
            # Map nodes waiting for their items to be added, and conditions waiting to be
            # judged: work cut off by a crash goes on.
            expand = [node for (node, _), state in zip(page, states, strict=True)
                      if state is NodeState.EXPANDING]
            decide = [node for (node, _), state in zip(page, states, strict=True)
                      if state is NodeState.DECIDING]
            added += await self._queue_step([_Owed(
                flow_id, FlowPhase.RUNNING, meta.namespace, (), queued, False, expand, decide)])
        return added

    async def _requeue_after_refusal(self, flow_id: FlowId, phase: FlowPhase) -> None:
        """A refused settlement may be the caller's own sent again: the Redis client retries a
        command whose reply was lost, so the first one ran but its queue step did not.
        Queue what the flow has ready (idempotent; refusals are rare, so the page read is)."""
        if phase is FlowPhase.RUNNING:
            await self.reconcile_flow(flow_id)

    async def _wind_down(self, flow_id: FlowId) -> int:
        """Cancel the nodes of an ended flow that never started, a page per call, and take
        them off their queues; returns how many left a queue. Nodes running when the flow
        ended are left to finish: their outcome is recorded as it comes."""
        meta = await self.store.meta(flow_id)
        if meta is None:
            return 0  # the flow is gone: nothing left to wind down
        cursor, removed = "0", 0
        while True:
            unqueue, cursor, done = await self.store.cancel_unstarted(flow_id, cursor, PAGE)
            removed += await self._unqueue(flow_id, meta.namespace, unqueue)
            if done:
                return removed

    async def _unqueue(self, flow_id: FlowId, namespace: str,
                       nodes: Iterable[tuple[str, str, int]]) -> int:
        """Take (node, queue name, rank) of one flow off their queues, one call per queue."""
        by_queue: dict[QueueId, list[tuple[str, int]]] = defaultdict(list)
        for node, queue, rank in nodes:
            by_queue[QueueId.of(namespace, queue)].append((node, rank))
        counts = await asyncio.gather(*(
            self.store.unqueue(qid, flow_id, items) for qid, items in by_queue.items()))
        return sum(counts)

    async def _purge_queued(self, flow_id: FlowId) -> int:
        """Take a stopped flow's ready and delayed nodes off their queues (paged).

        Only an optimisation: a node of a flow that is not Running never starts anyway.
        """
        meta = await self.store.meta(flow_id)
        if meta is None:
            return 0
        removed = 0
        async for page in self.store.ready_pages(flow_id):
            nodes = [n for n, _ in page]
            specs = await self.store.node_specs(flow_id, nodes)
            removed += await self._unqueue(flow_id, meta.namespace, (
                (name, spec.queue, spec.rank)
                for name, spec in zip(nodes, specs, strict=True) if spec is not None))
        return removed

    # ---- dispatch ------------------------------------------------------------------------

    async def promote_due(self, queue_id: QueueId) -> int | None:
        """Move due delayed nodes to ready; returns the next due time (ms) or None."""
        while True:
            moved, next_due = await self.store.promote(queue_id, PAGE)
            if moved < PAGE:
                return next_due

    async def take(self, queue_id: QueueId, max_nodes: int, *, owner: str,
                   lease_ms: int = 30_000, with_inputs: bool = False) -> list[Attempt]:
        """Start up to `max_nodes` ready nodes of the queue, priority order then FIFO.

        `with_inputs`: each attempt carries its node's inputs (`Attempt.inputs`), read in
        the call that starts it: what a worker runs next, one round trip fewer per batch.
        """
        queue_name = queue_id.name
        attempts: list[Attempt] = []
        for _ in range(4):  # refused members free their slot: try again, a bounded number of times
            want = max_nodes - len(attempts)
            if want <= 0:
                break
            # Due delayed nodes become ready first, in the same call.
            taken, _, limited = await self.store.take(queue_id, want, lease_ms,
                                                      _new_tokens(want), promote=PAGE)
            self.rate_limited[queue_id] = limited
            if not taken:
                break
            by_flow: dict[FlowId, list[tuple[str, str]]] = defaultdict(list)
            for lease in taken:
                by_flow[lease.flow].append((lease.node, lease.token))
            replies = await self.store.start_attempts_many(owner, list(by_flow.items()),
                                                           with_inputs=with_inputs)
            errors = [r for r in replies if isinstance(r, BaseException)]
            if errors and len(errors) == len(replies):
                raise errors[0]
            for error in errors:  # those nodes stay held until the stalled sweep re-queues them
                log.warning("queue %s: starting attempts failed: %s", queue_id, error)
            started: dict[tuple[FlowId, str], Attempt] = {}
            owed: list[_Owed] = []
            for flow_id, reply in zip(by_flow, replies, strict=True):
                if isinstance(reply, BaseException):
                    continue
                refused: list[tuple[QueueId, Lease]] = []
                early: list[Queued] = []
                for (node, token), row in zip(by_flow[flow_id], reply.rows, strict=True):
                    if row.status is StartStatus.OK:
                        started[(flow_id, node)] = await self._attempt(
                            flow_id, reply.name, queue_name, row, token)
                        continue
                    refused.append((queue_id, Lease(flow_id, node, token)))
                    if row.status is StartStatus.EARLY:  # back on the delayed set
                        early.append(Queued(node, queue_name, row.rank, row.due))
                if refused:
                    owed.append(_Owed(flow_id, reply.phase, reply.namespace, refused, early, False))
            attempts.extend(started[key] for key in ((t.flow, t.node) for t in taken)
                            if key in started)
            if owed:
                await self._queue_step(owed)
            if not owed or len(taken) < want:
                break
        return attempts

    async def _attempt(self, flow_id: FlowId, flow_name: str, queue: str, row: Started,
                       token: str) -> Attempt:
        """The attempt a start row (flow/start.lua's, or a handover's) began."""
        inputs = row.inputs
        return Attempt(flow_uid=flow_id.uid, namespace=flow_id.namespace, flow_name=flow_name,
                       node=row.node, queue=queue, attempt=row.attempt, token=token,
                       data=row.data, timeout_ms=row.timeout_ms,
                       waited_ms=row.due if row.due >= 0 else None,
                       # A leaf reads nothing more: no call, no copies.
                       inputs=None if inputs is None else ({}, {}, {})
                       if inputs is NO_INPUTS else await self._inputs(flow_id, row.node, inputs))

    async def renew(self, attempts: list[Attempt], lease_ms: int) -> None:
        by_queue: dict[QueueId, list[Lease]] = defaultdict(list)
        for a in attempts:
            by_queue[a.queue_id].append(Lease(a.flow_id, a.node, a.token))
        await asyncio.gather(*(self.store.renew(qid, lease_ms, leases)
                               for qid, leases in by_queue.items()))

    # ---- settling attempts ---------------------------------------------------------------

    async def store_result(self, flow_id: FlowId, node: str, token: str, value: Any) -> bool:
        """Record the attempt's value ahead of completion; False if the token is stale."""
        return await self.store.store_result(flow_id, node, token, value)

    async def complete(self, flow_id: FlowId, node: str, token: str,
                       value: Any = MISSING) -> CompleteOutcome:
        completion = Completion(node, token, None if value is MISSING else value,
                                use_stored=value is MISSING)
        [reply] = await self.store.complete([(flow_id, [completion])])
        if isinstance(reply, BaseException):
            raise reply
        await self._queue_step([_after_settling(flow_id, reply, [(node, token)])])
        if not reply.rows[0].accepted:
            await self._requeue_after_refusal(flow_id, reply.phase)
        return CompleteOutcome(accepted=reply.rows[0].accepted,
                               newly_ready=[*(q.node for q in reply.queued), *reply.expand,
                                            *reply.decide],
                               phase=reply.phase)

    async def complete_many(self, flow_id: FlowId, items: list[tuple[str, str, Any]]
                            ) -> list[CompleteOutcome]:
        """Complete several attempts of one flow, (node, token, value) each, in one flow step.

        The same as `complete` per item (a refused item does not stop the others), but one
        script call and one queue step for the whole batch. Outcomes are in item order;
        `newly_ready` of the batch is reported on the first accepted outcome.
        """
        return await self.complete_batch([(flow_id, n, t, v) for n, t, v in items])

    async def complete_batch(self, items: list[tuple[FlowId, str, str, Any]]
                             ) -> list[CompleteOutcome]:
        """`complete_many` across flows: (flow id, node, token, value) per item.

        One script call per flow (in parallel), then one queue step per queue for the whole
        batch: what a worker uses when many nodes finish together.
        """
        return await self._complete([
            Completion(node, token, None, True) if value is MISSING
            else Completion(node, token, value) for _, node, token, value in items],
            [flow for flow, _, _, _ in items])

    async def complete_attempts(self, done: list[tuple[Attempt, Any]], *, owner: str = "",
                                handover: int = 0, lease_ms: int = 30_000
                                ) -> list[CompleteOutcome]:
        """`complete_batch` for attempts this process took: (attempt, value) each. The
        attempt knows its node's queue, which the script then need not read.

        Handing over: up to `handover` of them (each the only completion of its flow here,
        on a queue whose latest take here found no rate limit) start the first node their
        completion makes ready on the same queue at once, for `owner` to run next, held for
        `lease_ms`: the outcome's `handed`. A chain's next step then costs no queue round
        trip and no start call (lua/flow/complete.lua).
        """
        return await self._complete([Completion(a.node, a.token, value, queue=a.queue)
                                     for a, value in done], [a.flow_id for a, _ in done],
                                    owner=owner, handover=handover if owner else 0,
                                    lease_ms=lease_ms)

    async def _complete(self, completions: list[Completion], flows: list[FlowId], *,
                        owner: str = "", handover: int = 0, lease_ms: int = 0
                        ) -> list[CompleteOutcome]:
        items = [(flow, c.node, c.token) for flow, c in zip(flows, completions, strict=True)]
        by_flow: dict[FlowId, list[int]] = defaultdict(list)
        for i, flow in enumerate(flows):
            by_flow[flow].append(i)
        calls: list[tuple[FlowId, list[int]]] = []
        for flow, indexes in by_flow.items():
            for j in range(0, len(indexes), self.chunk_nodes):
                calls.append((flow, indexes[j:j + self.chunk_nodes]))
        owners: list[str] = []
        for flow, indexes in calls:
            c = completions[indexes[0]]
            may = (handover > 0 and len(indexes) == 1 and c.queue != ""
                   and self.rate_limited.get(QueueId.of(flow.namespace, c.queue)) is False)
            owners.append(owner if may else "")
            handover -= may
        replies = await self.store.complete([
            (flow, [completions[i] for i in indexes]) for flow, indexes in calls],
            owners=owners)
        # Flows whose call failed are left out: the queue step of the others must still run.
        # The error is raised at the end; sending the batch again is safe (fenced by token).
        error = next((r for r in replies if isinstance(r, BaseException)), None)
        outcomes: list[CompleteOutcome | None] = [None] * len(items)
        owed: list[_Owed] = []
        for (flow, indexes), reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):
                continue
            ready = [*(q.node for q in reply.queued), *reply.expand, *reply.decide]
            holds: list[tuple[QueueId, Lease]] = []
            for i, row in zip(indexes, reply.rows, strict=True):
                handed = None
                if row.handed is not None:
                    token = handed_token(completions[i].token)
                    handed = await self._attempt(flow, reply.name, completions[i].queue,
                                                 row.handed, token)
                    holds.append((handed.queue_id, Lease(flow, handed.node, token)))
                outcomes[i] = CompleteOutcome(accepted=row.accepted,
                                              newly_ready=ready if row.accepted else [],
                                              phase=reply.phase, handed=handed)
                if row.accepted:
                    ready = []
            owed.append(_after_settling(flow, reply, [(items[i][1], items[i][2])
                                                     for i in indexes])._replace(holds=holds))
        await self._queue_step(owed, lease_ms=lease_ms)
        for (flow, _), reply in zip(calls, replies, strict=True):
            if not isinstance(reply, BaseException) and not all(r.accepted for r in reply.rows):
                await self._requeue_after_refusal(flow, reply.phase)
        if error is not None:
            # The caller sends the batch again and never sees these outcomes: what they
            # handed over goes back to its queue now, not after its lease as a stall.
            lost = [o.handed for o in outcomes if o is not None and o.handed is not None]
            if lost:
                try:
                    await self.release(lost, "handed back: the completion batch failed")
                except Exception as exc:  # then their leases run out and the sweep does it
                    log.warning("handing back %d attempts failed: %s", len(lost), exc)
            raise error
        return [o for o in outcomes if o is not None]

    async def inputs_many(self, flow_id: FlowId, nodes: list[str]) -> list[Inputs]:
        """(children_values, ignored_failures, failed_children) of several nodes of one flow,
        in one call."""
        [reply] = await self.inputs_batch([(flow_id, nodes)])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def inputs_batch(self, calls: list[tuple[FlowId, list[str]]]
                           ) -> list[list[Inputs] | BaseException]:
        """`inputs_many` for several flows, (flow id, nodes) each, batched into one round
        trip on a single server; per call its inputs or the exception it raised."""
        paged = [(flow, nodes[i:i + PAGE]) for flow, nodes in calls
                 for i in range(0, max(len(nodes), 1), PAGE)]
        replies = iter(await self.store.inputs(paged))
        out: list[list[Inputs] | BaseException] = []
        for flow, nodes in calls:
            got: list[Inputs] | BaseException = []
            for start in range(0, max(len(nodes), 1), PAGE):
                reply = next(replies)
                if isinstance(reply, BaseException):
                    got = reply
                elif not isinstance(got, BaseException):
                    for node, row in zip(nodes[start:start + PAGE], reply, strict=True):
                        got.append(await self._inputs(flow, node, row))
            out.append(got)
        return out

    async def _inputs(self, flow_id: FlowId, node: str, row: NodeInputs) -> Inputs:
        """A node's inputs from what a script read (flow/_inputs.lua): a wide fan-in and
        map children's values are read here, a page at a time."""
        if row.paged:
            return await self._paged_inputs(flow_id, node)
        values = dict(row.values)
        for child, items in row.maps:  # a map child's value: its items'
            values[child] = await self.store.map_values(flow_id, child, items)
        return values, dict(row.ignored), dict(row.failed)

    async def _paged_inputs(self, flow_id: FlowId, node: str) -> Inputs:
        """The inputs of a node with too many children for one script call, read a page at
        a time: no call holds Redis long, however wide the fan-in."""
        children = await self.store.node_children(flow_id, node)
        states = await self.store.node_states(flow_id, children)
        done = [c for c, s in zip(children, states, strict=True) if s is NodeState.COMPLETED]
        values = dict(await self.store.values_of(flow_id, done))
        erred = [(c, s) for c, s in zip(children, states, strict=True)
                 if s in (NodeState.IGNORED, NodeState.SKIPPED, NodeState.FAILED)]
        errors = await self.store.node_errors(flow_id, [c for c, _ in erred])
        ignored = {c: e or "" for (c, s), e in zip(erred, errors, strict=True)
                   if s is not NodeState.FAILED}
        failed = {c: e or "" for (c, s), e in zip(erred, errors, strict=True)
                  if s is NodeState.FAILED}
        return values, ignored, failed

    async def release(self, attempts: list[Attempt], reason: str = "handed back") -> int:
        """Hand back attempts this caller will not finish: ready again, no attempt spent.

        For a worker shutting down; unlike a lease running out this is not a stall, so it
        does not count against maxStalled. Returns how many attempts were still current.
        """
        by_flow: dict[FlowId, list[tuple[str, str]]] = defaultdict(list)
        for a in attempts:
            by_flow[a.flow_id].append((a.node, a.token))
        owed: list[_Owed] = []
        for flow, pairs in by_flow.items():
            owed.append(_after_settling(flow, await self.store.release(flow, reason, pairs), pairs))
        await self._queue_step(owed)
        return sum(len(o.leases) for o in owed)

    async def fail(self, flow_id: FlowId, node: str, token: str, error: str, *,
                   infrastructure: bool = False) -> FailOutcome:
        reply = await self.store.fail(flow_id, node, token, error[:ERROR_CAP],
                                      infrastructure=infrastructure,
                                      infra_retries=self.infra_retries,
                                      jitter_share=random.random())
        await self._queue_step([_after_settling(flow_id, reply, [(node, token)])])
        [row] = reply.rows
        if not row.accepted:
            await self._requeue_after_refusal(flow_id, reply.phase)
        return FailOutcome(accepted=row.accepted, action=row.outcome, retry_at_ms=row.at_ms,
                           phase=reply.phase)

    async def release_stalled(self, queue_id: QueueId) -> list[tuple[FlowId, str]]:
        """Settle attempts whose lease ended: back to ready (up to max_stalled), then failed.

        Returns (flow id, node) of the stalled attempts; leftover leases of attempts that
        already ended are dropped, and a node still ready is re-queued.
        """
        max_stalled = await self.store.max_stalled(queue_id, default=1)
        stalled: list[tuple[FlowId, str]] = []
        while True:
            leases = await self.store.expired_leases(queue_id, STALL_PAGE)
            replies = await self.store.stall_many(
                leases, max_stalled=max_stalled, jitter_shares=[random.random() for _ in leases])
            error: BaseException | None = None
            owed: list[_Owed] = []
            for lease, reply in zip(leases, replies, strict=True):
                if isinstance(reply, BaseException):
                    error = error or reply
                    continue
                [row] = reply.rows
                if row.accepted:
                    stalled.append((lease.flow, lease.node))
                    log.warning("flow %s node %s: lease expired, %s", lease.flow,
                                lease.node, row.outcome)
                # The lease goes either way: stalled now, or left over by a step before.
                owed.append(_Owed(lease.flow, reply.phase, reply.namespace,
                                  [(queue_id, lease)], reply.queued, row.accepted))
            await self._queue_step(owed)
            if error is not None:
                raise error
            if len(leases) < STALL_PAGE:
                return stalled

    # ---- flow control ------------------------------------------------------------------

    async def suspend(self, flow_id: FlowId) -> None:
        await self.store.suspend(flow_id)

    async def resume(self, flow_id: FlowId) -> None:
        await self.store.resume(flow_id)
        await self.reconcile_flow(flow_id)

    async def cancel(self, flow_id: FlowId) -> list[tuple[str, str]]:
        """Cancel the flow; returns (node, token) of attempts still running, to be stopped."""
        reply = await self.store.cancel(flow_id)
        # Running attempts keep their leases until they report; what never started goes.
        await self._queue_step([_Owed(flow_id, reply.phase, reply.namespace, (), (), True)])
        return reply.rows

    async def retry_failed(self, flow_id: FlowId) -> int:
        """Re-run the failed nodes of a Failed flow; returns how many nodes became ready."""
        reply = await self.store.retry_failed(flow_id)
        if not reply.rows[0]:
            meta = await self.store.meta(flow_id)
            if meta is None:
                raise FlowNotFound(f"flow {flow_id} is not in Redis")
            raise FlowStateError(
                f"Flow {meta.namespace}/{meta.name} is {meta.phase}: "
                "only a Failed flow can retry its failed nodes")
        await self.reconcile_flow(flow_id)
        return len(reply.queued)

    async def delete(self, flow_id: FlowId) -> None:
        """Remove every key of the flow and free the queue leases of its running attempts.

        Its other queue entries are dropped lazily: a node of a missing flow never starts.
        """
        await self._purge_queued(flow_id)
        meta = await self.store.meta(flow_id)
        tokens = await self.store.active_tokens(flow_id)
        nodes = list(tokens)
        specs = await self.store.node_specs(flow_id, nodes)
        await self.store.delete(flow_id)
        leases = [(QueueId.of(meta.namespace, spec.queue), Lease(flow_id, node, tokens[node]))
                  for node, spec in zip(nodes, specs, strict=True)
                  if spec is not None and meta is not None]
        await self._queue_step([_Owed(flow_id, FlowPhase.MISSING, "", leases, (), False)])
        if not is_exit_flow(flow_id):  # after the flow's own keys: nothing starts it again
            await self.delete(exit_flow_id(flow_id))

    # ---- exit handlers (spec.onExit) ----------------------------------------------------

    async def start_exit(self, flow_id: FlowId) -> bool:
        """Add and start the exit flow (`exit_flow_id`) of an ended flow that has exit
        handlers, each node's data given the flow's name, namespace, phase and failures.

        Idempotent: False when the flow has not ended, has no exit handlers, or its exit flow
        exists already (an exit flow whose queue step a crash cut off is reconciled then).
        Called by whatever sees the end: the queue step of every flow step and
        reconcile_flow, which repairs a crash between the end and this call.
        """
        if is_exit_flow(flow_id):
            return False
        meta = await self.store.meta(flow_id)
        if meta is None or meta.phase not in TERMINAL_PHASES:
            return False
        encoded, ttl = await self.store.exit_graph(flow_id)
        if encoded is None:
            return False
        failures = [NodeFailure(node=n, error=e, attempt=a)
                    for n, e, a in await self.store.failures(flow_id)]
        graph = with_outcome(decode_graph(encoded), flow_outcome(
            meta.name, meta.namespace, str(meta.phase), failures))
        exit_id = exit_flow_id(flow_id)
        ref = FlowRef(uid=exit_id.uid, namespace=meta.namespace, name=meta.name)
        try:
            created = await self.submit(ref, graph, ttl_seconds_after_finished=ttl)
        except FlowStateError:
            # Another caller added it at the same time and it has already ended: the step
            # that called this must not fail for it.
            log.info("flow %s: its exit handlers were started by another caller", flow_id)
            return False
        if created:
            log.info("flow %s ended %s: its %d exit node(s) start", flow_id, meta.phase,
                     len(graph.nodes))
            return True
        await self.reconcile_flow(exit_id)
        return False

    async def exit_snapshot(self, flow_id: FlowId) -> FlowSnapshot | None:
        """The snapshot of the flow's exit handlers; None until they started (or without)."""
        try:
            return await self.snapshot(exit_flow_id(flow_id))
        except FlowNotFound:
            return None

    # ---- reads -------------------------------------------------------------------------

    async def snapshot(self, flow_id: FlowId) -> FlowSnapshot:
        meta = await self.store.meta(flow_id)
        if meta is None:
            raise FlowNotFound(f"flow {flow_id} is not in Redis (never added, deleted, "
                               "or expired after ttlSecondsAfterFinished)")
        counts: dict[str, int] = {s: n for s, n in (await self.store.counts(flow_id)).items()}
        failures = await self.store.failures(flow_id)
        return FlowSnapshot(
            phase=meta.shown_phase,
            total=meta.total,
            counts=counts,
            done=sum(n for state, n in counts.items() if state in TERMINAL_STATES),
            started_at_ms=meta.started_at_ms,
            finished_at_ms=meta.finished_at_ms,
            failures=[NodeFailure(node=n, error=e, attempt=a) for n, e, a in failures],
        )

    async def node_infos(self, flow_id: FlowId) -> dict[str, NodeInfo]:
        states = await self.store.scan_states(flow_id)
        return dict(zip([n for n, _ in states], await self._infos(flow_id, states), strict=True))

    async def _infos(self, flow_id: FlowId, states: list[tuple[str, NodeState]]
                     ) -> list[NodeInfo]:
        """What is kept of each node besides its place in the graph, one read per field."""
        nodes = [n for n, _ in states]
        attempts = await self.store.node_attempts(flow_id, nodes)
        results = await self.store.node_results(flow_id, nodes)
        errors = await self.store.node_errors(flow_id, nodes)
        progress = await self.store.node_progress(flow_id, nodes)
        times = await self.store.node_times(flow_id, nodes)
        return [NodeInfo(state=state, attempt=att, result=res, error=err, progress=prog,
                         started_ms=start, finished_ms=end)
                for (_, state), att, res, err, prog, (start, end)
                in zip(states, attempts, results, errors, progress, times, strict=True)]

    async def node_data(self, flow_id: FlowId, node: str) -> Any:
        """The node's input as its Flow gave it (None without data)."""
        return await self.store.node_data(flow_id, node)

    async def children_values(self, flow_id: FlowId, node: str) -> dict[str, Any]:
        """Return values of the node's completed children, keyed by child name."""
        [(values, _, _)] = await self.inputs_many(flow_id, [node])
        return values

    async def _children_errors(self, flow_id: FlowId, node: str,
                               *wanted: NodeState) -> dict[str, str]:
        children = await self.store.node_children(flow_id, node)
        states = await self.store.node_states(flow_id, children)
        chosen = [c for c, s in zip(children, states, strict=True) if s in wanted]
        errors = await self.store.node_errors(flow_id, chosen)
        return {c: e or "" for c, e in zip(chosen, errors, strict=True)}

    async def ignored_failures(self, flow_id: FlowId, node: str) -> dict[str, str]:
        """Errors of the node's children that failed under onFailure=ignore, and why its
        skipped children (their condition was false) were skipped."""
        return await self._children_errors(flow_id, node, NodeState.IGNORED, NodeState.SKIPPED)

    async def failed_children(self, flow_id: FlowId, node: str) -> dict[str, str]:
        """Errors of the node's children that failed for good (BullMQ's
        getFailedChildrenValues): a parent runs with such children only when one of them
        was continueParent and released it."""
        return await self._children_errors(flow_id, node, NodeState.FAILED)

    async def update_progress(self, flow_id: FlowId, node: str, token: str, progress: Any) -> None:
        await self.store.update_progress(flow_id, node, token, progress)

    async def log(self, flow_id: FlowId, node: str, token: str, message: str) -> None:
        await self.store.log(flow_id, node, token, message, LOG_CAP)

    async def logs(self, flow_id: FlowId, *, node: str | None = None,
                   count: int = 1000) -> list[dict[str, str]]:
        """The latest log lines of the flow (fields node, attempt, msg), oldest first."""
        lines = await self.store.logs(flow_id, count)
        return [line for line in lines if node is None or line.get("node") == node]

    async def keep_pod_log(self, flow_id: FlowId, node: str, attempt: int, text: str, *,
                           failed: bool, flow_budget: int) -> bool:
        """Keep the tail of an attempt's container log with the flow (or why its pod never
        started), so it outlives the pod; False when the flow's budget is used up (half of it
        for a succeeded attempt) or the flow is gone."""
        return await self.store.keep_pod_log(flow_id, node, attempt, text, failed=failed,
                                             flow_budget=flow_budget) == "kept"

    async def attempt_logs(self, flow_id: FlowId, node: str) -> list[tuple[int, str]]:
        """(attempt, container log tail) of each attempt of the node whose log was kept,
        oldest first. The node's `job.log()` lines are in `logs(node=...)`, each with its
        attempt."""
        return await self.store.attempt_logs(flow_id, node)

    async def pod_log_usage(self, flow_id: FlowId) -> tuple[int, int]:
        """(bytes of container logs the flow keeps, attempts whose log was not kept because
        the flow's budget was used up)."""
        return await self.store.pod_log_usage(flow_id)

    async def events(self, flow_id: FlowId, count: int = 1000) -> list[dict[str, str]]:
        """The latest events of the flow (started, completed, retry, failed, flow...)."""
        return await self.store.events(flow_id, count)

    # ---- paged reads for the API (kflow.server) ---------------------------------------

    async def _known(self, flow_id: FlowId) -> None:
        if await self.store.meta(flow_id) is None:
            raise FlowNotFound(f"flow {flow_id} is not in Redis (never added, deleted, "
                               "or expired after ttlSecondsAfterFinished)")

    async def _rows(self, flow_id: FlowId, states: list[tuple[str, NodeState]]
                    ) -> list[NodeRow]:
        specs = await self.store.node_specs(flow_id, [n for n, _ in states])
        infos = await self._infos(flow_id, states)
        return [NodeRow(name=node, queue="" if spec is None else spec.queue, state=i.state,
                        attempt=i.attempt, error=i.error, progress=i.progress, result=i.result,
                        started_ms=i.started_ms, finished_ms=i.finished_ms)
                for (node, _), spec, i in zip(states, specs, infos, strict=True)]

    async def node_page(self, flow_id: FlowId, *, cursor: str = "0", limit: int = 500,
                        state: NodeState | None = None, name_glob: str | None = None
                        ) -> NodePage:
        """One page of the flow's nodes from an HSCAN cursor ("0": from the start), never
        the whole flow: about `limit` nodes (a scan step returns whole buckets, so a page may
        hold a few more), only those in `state` and whose name matches `name_glob`.

        A filtered page scans at most SCAN_BUDGET times `limit` nodes; it may then hold fewer
        than `limit` (even none) with a cursor to go on from. The next page's cursor is "0"
        when the scan is done. A node that stays in the flow is seen at least once over a
        whole scan (HSCAN's guarantee), possibly twice.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        await self._known(flow_id)
        found: list[tuple[str, NodeState]] = []
        scanned = 0
        while True:
            page, cursor = await self.store.state_page(flow_id, cursor, limit, match=name_glob)
            scanned += max(len(page), 1)
            found.extend(p for p in page if state is None or p[1] is state)
            if cursor == "0" or len(found) >= limit or scanned >= SCAN_BUDGET * limit:
                break
        return NodePage(await self._rows(flow_id, found), cursor)

    async def node_detail(self, flow_id: FlowId, node: str) -> NodeDetail:
        """Everything kept about one node; NodeNotFound when the flow has no such node."""
        await self._known(flow_id)
        [state] = await self.store.node_states(flow_id, [node])
        if state is None:
            raise NodeNotFound(f"flow {flow_id} has no node {node!r}")
        [row] = await self._rows(flow_id, [(node, state)])
        lines = await self.store.logs(flow_id, NODE_LOG_LINES)
        return NodeDetail(
            row=row, data=await self.store.node_data(flow_id, node), result=row.result,
            parents=await self.store.node_parents(flow_id, node),
            children=await self.store.node_children(flow_id, node),
            ignored_failures=await self.ignored_failures(flow_id, node),
            failed_children=await self.failed_children(flow_id, node),
            attempt_logs=await self.store.attempt_logs(flow_id, node),
            logs=[line for line in lines if line.get("node") == node])

    async def graph_nodes(self, flow_id: FlowId) -> list[GraphNode]:
        """Every node's queue, state and children, read a page at a time (for drawing the
        flow folded: kflow.graph.fold)."""
        await self._known(flow_id)
        out: dict[str, GraphNode] = {}  # a scan may return a node twice: kept once
        cursor = "0"
        while True:
            page, cursor = await self.store.graph_page(flow_id, cursor, PAGE)
            for node, state, queue, children in page:
                out[node] = GraphNode(node, queue, state, children)
            if cursor == "0":
                return _with_items(out)

    async def events_tail(self, flow_id: FlowId) -> str:
        """The stream id of the flow's latest event: follow_events from here sees only what
        comes next."""
        return await self.store.events_tail(flow_id)

    async def follow_events(self, flow_id: FlowId, after: str, *, block_ms: int = 15_000,
                            count: int = 500) -> list[dict[str, str]]:
        """The flow's events after the stream id `after` (fields id, type, node...), waiting
        up to `block_ms` for one; [] when none came in that time."""
        return await self.store.read_events(flow_id, after, block_ms=block_ms, count=count)

    async def node_states(self, flow_id: FlowId, nodes: list[str]) -> list[NodeRow | None]:
        """The current row of each node (None for a node the flow does not have)."""
        states = await self.store.node_states(flow_id, nodes)
        known = [(n, s) for n, s in zip(nodes, states, strict=True) if s is not None]
        rows = iter(await self._rows(flow_id, known))
        return [None if s is None else next(rows) for s in states]
