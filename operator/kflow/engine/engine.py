"""Scheduling over the store: add flows, hand out ready nodes, settle attempts, repair crashes."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kflow.engine.types import (
    MISSING,
    TERMINAL_STATES,
    Attempt,
    CompleteOutcome,
    FailOutcome,
    FlowNotFound,
    FlowRef,
    FlowSnapshot,
    FlowStateError,
    Inputs,
    NodeFailure,
    NodeInfo,
    QueueConfig,
)
from kflow.graph.dag import CompiledFlow
from kflow.store.codec import dumps, pack_spec, unpack_spec
from kflow.store.keys import active_member, queue_member, split_active, split_member
from kflow.store.redis_store import PAGE, Queued, RedisStore

if TYPE_CHECKING:
    import redis.asyncio
    import redis.asyncio.cluster

log = logging.getLogger(__name__)

CHUNK_NODES = 500  # nodes per add-nodes call: a few ms of Redis time each
CHUNK_BYTES = 512 * 1024  # and at most about this many bytes of arguments
INFRA_RETRIES = 5  # infrastructure failures per node that do not spend an attempt
LOG_CAP = 10_000  # approximate length of a flow's log stream
ERROR_CAP = 4096  # characters of an error text kept


def _new_token() -> str:
    return secrets.token_hex(8)


def _json(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


class Engine:
    """The flow engine over one Redis (single server or cluster); holds no state of its own."""

    def __init__(
        self,
        redis: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        prefix: str = "kflow",
    ) -> None:
        self.store = RedisStore(redis, prefix=prefix)
        self.chunk_nodes = CHUNK_NODES
        self.infra_retries = INFRA_RETRIES

    # ---- queues ------------------------------------------------------------------------

    async def configure_queue(self, queue_id: str, config: QueueConfig) -> None:
        if (config.rate_max is None) != (config.rate_per_ms is None):
            raise ValueError(f"queue {queue_id}: rate_max and rate_per_ms go together; "
                             "set both or neither")
        await self.store.configure_queue(queue_id, {
            "concurrency": config.concurrency,
            "rate_max": config.rate_max,
            "rate_per_ms": config.rate_per_ms,
            "max_stalled": config.max_stalled,
        })

    async def queue_depth(self, queue_id: str) -> tuple[int, int, int]:
        """(ready, active, delayed) members of the queue."""
        return await self.store.depth(queue_id)

    async def queue_takes(self, queue_id: str, count: int = 10_000) -> list[tuple[int, int]]:
        """(server time ms, nodes started) per take call of the queue, oldest first (bounded).

        The queue's own record of starts: what its rate limit is judged against.
        """
        return await self.store.takes(queue_id, count)

    async def _enqueue(self, uid: str, namespace: str, queued: Iterable[Queued]) -> None:
        by_queue: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        for q in queued:
            member = queue_member(uid, q.node)
            by_queue[f"{namespace}/{q.queue}"].append((member, q.priority, q.due))
        await asyncio.gather(*(self.store.enqueue(qid, items) for qid, items in by_queue.items()))

    # ---- adding a flow -------------------------------------------------------------------

    def _chunks(self, compiled: CompiledFlow) -> list[list[str]]:
        chunks: list[list[str]] = []
        rows: list[str] = []
        size = 0
        for node in compiled.nodes.values():
            row = [
                node.name,
                pack_spec(node.queue, node.opts),
                dumps(list(node.parents)) if node.parents else "",
                dumps(list(node.children)) if node.children else "",
                str(len(node.children) if node.children else -node.opts.delay_ms),
                "" if node.data is None else dumps(node.data),
            ]
            row_size = sum(len(x) for x in row)
            if rows and (len(rows) // 6 >= self.chunk_nodes or size + row_size > CHUNK_BYTES):
                chunks.append(rows)
                rows, size = [], 0
            rows.extend(row)
            size += row_size
        if rows:
            chunks.append(rows)
        return chunks

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
        created = await self.store.create_flow(
            flow.uid, flow.namespace, flow.name, total=len(compiled.nodes),
            roots=len(compiled.roots), ttl_seconds=ttl_seconds_after_finished,
            chunks=len(chunks), queues=sorted(compiled.queues))
        if created == "exists":
            return False
        if created == "resume":
            stored = int((await self.store.meta(flow.uid)).get("chunks", -1))
            if stored != len(chunks):
                raise FlowStateError(
                    f"Flow {flow.namespace}/{flow.name}: an interrupted add split the graph "
                    f"into {stored} chunks, this add into {len(chunks)} (chunk size changed); "
                    "delete the flow from Redis and add it again")
        for number, rows in enumerate(chunks, start=1):
            await self.store.add_nodes(flow.uid, number, rows)
        phase = await self.store.activate(flow.uid)
        if phase != "Running":
            raise FlowStateError(f"Flow {flow.namespace}/{flow.name}: activation left it "
                                 f"{phase}; add it again to finish writing it")
        if suspended:
            await self.store.suspend(flow.uid)
            log.info("flow %s/%s added suspended: %d nodes in %d chunks", flow.namespace,
                     flow.name, len(compiled.nodes), len(chunks))
            return True
        leaves = [compiled.nodes[name] for name in compiled.leaves]
        if created == "created" and all(n.opts.delay_ms <= 0 for n in leaves):
            # Fresh flow, no start delays: its leaves are exactly the ready set, so they go
            # on their queues without reading it back (four round trips fewer per flow).
            await self._enqueue(flow.uid, flow.namespace, (
                Queued(n.name, n.queue, n.opts.priority, 0) for n in leaves))
        else:
            await self.reconcile_flow(flow.uid)
        log.info("flow %s/%s added: %d nodes in %d chunks", flow.namespace, flow.name,
                 len(compiled.nodes), len(chunks))
        return True

    async def reconcile_flow(self, flow_uid: str) -> int:
        """Put every ready or delayed node of a running flow on its queue (idempotent).

        Repairs a crash between a flow step and its queue step, and re-queues after resume
        and retry. Returns how many queue entries were missing and are now added.
        """
        meta = await self.store.meta(flow_uid)
        if meta.get("phase") != "Running" or meta.get("suspended") == "1":
            return 0
        namespace = meta["namespace"]
        added = 0
        async for page in self.store.ready_pages(flow_uid):
            nodes = [n for n, _ in page]
            states = await self.store.fields(flow_uid, "state", nodes)
            specs = await self.store.fields(flow_uid, "spec", nodes)
            by_queue: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
            for (node, score), state, spec_raw in zip(page, states, specs, strict=True):
                if spec_raw is None or state not in ("ready", "delayed"):
                    continue
                spec = unpack_spec(spec_raw)
                due = score if state == "delayed" else 0
                by_queue[f"{namespace}/{spec.queue}"].append(
                    (queue_member(flow_uid, node), spec.priority, due))
            counts = await asyncio.gather(
                *(self.store.enqueue(qid, items) for qid, items in by_queue.items()))
            added += sum(counts)
        return added

    async def _wind_down(self, flow_uid: str) -> int:
        """Cancel the nodes of an ended flow that never started, a page per call, and take
        them off their queues; returns how many left a queue. Nodes running when the flow
        ended are left to finish: their outcome is recorded as it comes."""
        namespace = (await self.store.meta(flow_uid)).get("namespace", "")
        cursor, removed = "0", 0
        while True:
            unqueue, cursor, done = await self.store.cancel_unstarted(flow_uid, cursor, PAGE)
            by_queue: dict[str, list[tuple[str, int]]] = defaultdict(list)
            for node, queue, priority in unqueue:
                by_queue[f"{namespace}/{queue}"].append((node, priority))
            counts = await asyncio.gather(*(
                self.store.unqueue(qid, flow_uid, items) for qid, items in by_queue.items()))
            removed += sum(counts)
            if done:
                return removed

    async def _purge_queued(self, flow_uid: str) -> int:
        """Take a stopped flow's ready and delayed nodes off their queues (paged).

        Only an optimisation: a node of a flow that is not Running never starts anyway.
        """
        meta = await self.store.meta(flow_uid)
        if not meta:
            return 0
        namespace = meta["namespace"]
        removed = 0
        async for page in self.store.ready_pages(flow_uid):
            nodes = [n for n, _ in page]
            specs = await self.store.fields(flow_uid, "spec", nodes)
            by_queue: dict[str, list[tuple[str, int]]] = defaultdict(list)
            for name, spec_raw in zip(nodes, specs, strict=True):
                if spec_raw is not None:
                    spec = unpack_spec(spec_raw)
                    by_queue[f"{namespace}/{spec.queue}"].append((name, spec.priority))
            counts = await asyncio.gather(*(
                self.store.unqueue(qid, flow_uid, items) for qid, items in by_queue.items()))
            removed += sum(counts)
        return removed

    # ---- dispatch ------------------------------------------------------------------------

    async def promote_due(self, queue_id: str) -> int | None:
        """Move due delayed nodes to ready; returns the next due time (ms) or None."""
        while True:
            moved, next_due = await self.store.promote(queue_id, PAGE)
            if moved < PAGE:
                return next_due

    async def take(self, queue_id: str, max_nodes: int, *, owner: str,
                   lease_ms: int = 30_000) -> list[Attempt]:
        """Start up to `max_nodes` ready nodes of the queue, priority order then FIFO."""
        queue_name = queue_id.split("/", 1)[1]
        attempts: list[Attempt] = []
        await self.store.promote(queue_id, PAGE)
        for _ in range(4):  # refused members free their slot: try again, a bounded number of times
            want = max_nodes - len(attempts)
            if want <= 0:
                break
            taken, _ = await self.store.take(queue_id, want, lease_ms,
                                             [_new_token() for _ in range(want)])
            if not taken:
                break
            by_flow: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for member, token in taken:
                uid, node = split_member(member)
                by_flow[uid].append((node, token))
            replies = await self.store.start_attempts_many(owner, list(by_flow.items()))
            errors = [r for r in replies if isinstance(r, BaseException)]
            if errors and len(errors) == len(replies):
                raise errors[0]
            for error in errors:  # those nodes stay held until the stalled sweep re-queues them
                log.warning("queue %s: starting attempts failed: %s", queue_id, error)
            started: dict[tuple[str, str], Attempt] = {}
            drop: list[str] = []
            redelay: list[tuple[str, int, int]] = []
            for uid, reply in zip(by_flow, replies, strict=True):
                if isinstance(reply, BaseException):
                    continue
                namespace, name, rows = reply
                tokens = dict(by_flow[uid])
                for row in rows:
                    token = tokens[row.node]
                    if row.status == "ok":
                        started[(uid, row.node)] = Attempt(
                            flow_uid=uid, namespace=namespace, flow_name=name, node=row.node,
                            queue=queue_name, attempt=row.attempt, token=token,
                            data=json.loads(row.data_json),
                            timeout_ms=None if row.timeout_ms < 0 else row.timeout_ms)
                        continue
                    drop.append(active_member(uid, row.node, token))
                    if row.status == "early":
                        redelay.append((queue_member(uid, row.node), row.attempt, row.due))
            attempts.extend(started[(uid, node)] for member, _ in taken
                            for uid, node in [split_member(member)] if (uid, node) in started)
            if drop:
                await self.store.drop_active(queue_id, drop)
            if redelay:
                await self.store.enqueue(queue_id, redelay)
            if not drop or len(taken) < want:
                break
        return attempts

    async def renew(self, attempts: list[Attempt], lease_ms: int) -> None:
        by_queue: dict[str, list[str]] = defaultdict(list)
        for a in attempts:
            by_queue[a.queue_id].append(active_member(a.flow_uid, a.node, a.token))
        await asyncio.gather(*(self.store.renew(qid, lease_ms, members)
                               for qid, members in by_queue.items()))

    # ---- settling attempts ---------------------------------------------------------------

    async def store_result(self, flow_uid: str, node: str, token: str, value: Any) -> bool:
        """Record the attempt's value ahead of completion; False if the token is stale."""
        return await self.store.store_result(flow_uid, node, token, dumps(value))

    async def complete(self, flow_uid: str, node: str, token: str,
                       value: Any = MISSING) -> CompleteOutcome:
        value_json = None if value is MISSING else dumps(value)
        reply = await self.store.complete(flow_uid, node, token, value_json)
        if reply.accepted:
            await self._after_flow_step(flow_uid, node, token, reply.namespace, reply.queue,
                                        reply.phase, reply.queued)
        return CompleteOutcome(accepted=reply.accepted,
                               newly_ready=[q.node for q in reply.queued], phase=reply.phase)

    async def complete_many(self, flow_uid: str, items: list[tuple[str, str, Any]]
                            ) -> list[CompleteOutcome]:
        """Complete several attempts of one flow, (node, token, value) each, in one flow step.

        The same as `complete` per item (a refused item does not stop the others), but one
        script call and one queue step for the whole batch. Outcomes are in item order;
        `newly_ready` of the batch is reported on the first accepted outcome.
        """
        return await self.complete_batch([(flow_uid, n, t, v) for n, t, v in items])

    async def complete_batch(self, items: list[tuple[str, str, str, Any]]
                             ) -> list[CompleteOutcome]:
        """`complete_many` across flows: (flow uid, node, token, value) per item.

        One script call per flow (in parallel), then one queue step per queue for the whole
        batch: what a worker uses when many nodes finish together.
        """
        by_flow: dict[str, list[int]] = defaultdict(list)
        for i, (uid, _, _, _) in enumerate(items):
            by_flow[uid].append(i)
        calls: list[tuple[str, list[int]]] = []
        for uid, indexes in by_flow.items():
            for j in range(0, len(indexes), self.chunk_nodes):
                calls.append((uid, indexes[j:j + self.chunk_nodes]))
        replies = await self.store.complete_many([
            (uid, [(items[i][1], items[i][2], dumps(items[i][3])) for i in indexes])
            for uid, indexes in calls])
        # Flows whose call failed are left out: the queue step of the others must still run.
        # The error is raised at the end; sending the batch again is safe (fenced by token).
        error = next((r for r in replies if isinstance(r, BaseException)), None)
        kept = [(call, r) for call, r in zip(calls, replies, strict=True)
                if not isinstance(r, BaseException)]
        outcomes: list[CompleteOutcome | None] = [None] * len(items)
        drop: dict[str, list[str]] = defaultdict(list)
        queue: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        ended: list[str] = []
        for (uid, indexes), (phase, namespace, rows, queued) in kept:
            ready = [q.node for q in queued]
            for i, (ok, node_queue) in zip(indexes, rows, strict=True):
                outcomes[i] = CompleteOutcome(accepted=ok, newly_ready=ready if ok else [],
                                              phase=phase)
                if ok:
                    ready = []
                    _, node, token, _ = items[i]
                    drop[f"{namespace}/{node_queue}"].append(active_member(uid, node, token))
            if phase == "Running":
                for q in queued:
                    queue[f"{namespace}/{q.queue}"].append(
                        (queue_member(uid, q.node), q.priority, q.due))
            elif phase in ("Failed", "Cancelled") and any(ok for ok, _ in rows):
                ended.append(uid)
        # The queue step after the flow steps (as in `_after_flow_step`), batched per queue.
        await asyncio.gather(*(self.store.drop_active(qid, m) for qid, m in drop.items()))
        await asyncio.gather(*(self.store.enqueue(qid, q) for qid, q in queue.items()))
        for uid in ended:
            await self._wind_down(uid)
        if error is not None:
            raise error
        return [o for o in outcomes if o is not None]

    async def inputs_many(self, flow_uid: str, nodes: list[str]) -> list[Inputs]:
        """(children_values, ignored_failures, failed_children) of several nodes of one flow,
        in one call."""
        [reply] = await self.inputs_batch([(flow_uid, nodes)])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def inputs_batch(self, calls: list[tuple[str, list[str]]]
                           ) -> list[list[Inputs] | BaseException]:
        """`inputs_many` for several flows, (flow uid, nodes) each, batched into one round
        trip on a single server; per call its inputs or the exception it raised."""
        paged = [(uid, nodes[i:i + PAGE]) for uid, nodes in calls
                 for i in range(0, max(len(nodes), 1), PAGE)]
        replies = iter(await self.store.inputs(paged))
        out: list[list[Inputs] | BaseException] = []
        for _, nodes in calls:
            got: list[Inputs] | BaseException = []
            for _ in range(0, max(len(nodes), 1), PAGE):
                reply = next(replies)
                if isinstance(reply, BaseException):
                    got = reply
                elif not isinstance(got, BaseException):
                    got.extend(({c: json.loads(v) for c, v in row.values}, dict(row.ignored),
                                dict(row.failed)) for row in reply)
            out.append(got)
        return out

    async def release(self, attempts: list[Attempt], reason: str = "handed back") -> int:
        """Hand back attempts this caller will not finish: ready again, no attempt spent.

        For a worker shutting down; unlike a lease running out this is not a stall, so it
        does not count against maxStalled. Returns how many attempts were still current.
        """
        by_flow: dict[str, list[Attempt]] = defaultdict(list)
        for a in attempts:
            by_flow[a.flow_uid].append(a)
        released = 0
        for uid, group in by_flow.items():
            phase, namespace, rows, queued = await self.store.release(
                uid, reason, [(a.node, a.token) for a in group])
            await self._after_batch(uid, namespace, phase, queued, [
                (a.node, a.token, queue) for a, (ok, queue) in zip(group, rows, strict=True)
                if ok])
            released += sum(1 for ok, _ in rows if ok)
        return released

    async def _after_batch(self, uid: str, namespace: str, phase: str, queued: list[Queued],
                           settled: list[tuple[str, str, str]]) -> None:
        """`_after_flow_step` for a batch: free the (node, token, queue) leases, queue the rest."""
        by_queue: dict[str, list[str]] = defaultdict(list)
        for node, token, queue in settled:
            by_queue[f"{namespace}/{queue}"].append(active_member(uid, node, token))
        await asyncio.gather(*(self.store.drop_active(qid, members)
                               for qid, members in by_queue.items()))
        if phase == "Running" and queued:
            await self._enqueue(uid, namespace, queued)
        elif settled and phase in ("Failed", "Cancelled"):
            await self._wind_down(uid)

    async def fail(self, flow_uid: str, node: str, token: str, error: str, *,
                   infrastructure: bool = False) -> FailOutcome:
        reply = await self.store.fail(flow_uid, node, token, error[:ERROR_CAP],
                                      infrastructure=infrastructure,
                                      infra_retries=self.infra_retries,
                                      jitter_share=random.random())
        if reply.accepted:
            await self._after_flow_step(flow_uid, node, token, reply.namespace, reply.queue,
                                        reply.phase, reply.queued)
        return FailOutcome(accepted=reply.accepted, action=reply.action,
                           retry_at_ms=reply.retry_at_ms, phase=reply.phase)

    async def _after_flow_step(self, uid: str, node: str, token: str, namespace: str,
                               queue: str, phase: str, queued: list[Queued]) -> None:
        """The queue step owed after a flow step: free the lease, queue what became ready.

        Nodes made ready in a flow that is not Running (suspended, failed) stay on the
        flow's ready set only; resume and retry re-queue them by reconciliation.
        """
        await self._after_batch(uid, namespace, phase, queued, [(node, token, queue)])

    async def release_stalled(self, queue_id: str) -> list[tuple[str, str]]:
        """Settle attempts whose lease ended: back to ready (up to max_stalled), then failed.

        Returns (flow uid, node) of the stalled attempts; leftover leases of attempts that
        already ended are dropped, and a node still ready is re-queued.
        """
        namespace = queue_id.split("/", 1)[0]
        max_stalled = (await self.store.queue_config(queue_id)).get("max_stalled", 1)
        stalled: list[tuple[str, str]] = []
        while True:
            members = await self.store.expired_leases(queue_id, 100)
            for member in members:
                uid, node, token = split_active(member)
                action, phase, queued = await self.store.stall(
                    uid, node, token, max_stalled=max_stalled, jitter_share=random.random())
                if action != "gone":
                    stalled.append((uid, node))
                    log.warning("flow %s node %s: lease expired, %s", uid, node, action)
                await self.store.drop_active(queue_id, [member])
                if queued and phase == "Running":
                    await self._enqueue(uid, namespace, queued)
                elif action != "gone" and phase in ("Failed", "Cancelled"):
                    await self._wind_down(uid)
            if len(members) < 100:
                return stalled

    # ---- flow control ------------------------------------------------------------------

    async def suspend(self, flow_uid: str) -> None:
        await self.store.suspend(flow_uid)

    async def resume(self, flow_uid: str) -> None:
        await self.store.resume(flow_uid)
        await self.reconcile_flow(flow_uid)

    async def cancel(self, flow_uid: str) -> list[tuple[str, str]]:
        """Cancel the flow; returns (node, token) of attempts still running, to be stopped."""
        _, active = await self.store.cancel(flow_uid)
        await self._wind_down(flow_uid)
        return active

    async def retry_failed(self, flow_uid: str) -> int:
        """Re-run the failed nodes of a Failed flow; returns how many nodes became ready."""
        count = await self.store.retry_failed(flow_uid)
        if count < 0:
            meta = await self.store.meta(flow_uid)
            if not meta:
                raise FlowNotFound(f"flow {flow_uid} is not in Redis")
            raise FlowStateError(
                f"Flow {meta.get('namespace')}/{meta.get('name')} is {meta.get('phase')}: "
                "only a Failed flow can retry its failed nodes")
        await self.reconcile_flow(flow_uid)
        return count

    async def delete(self, flow_uid: str) -> None:
        """Remove every key of the flow and free the queue leases of its running attempts.

        Its other queue entries are dropped lazily: a node of a missing flow never starts.
        """
        await self._purge_queued(flow_uid)
        namespace = (await self.store.meta(flow_uid)).get("namespace")
        tokens = await self.store.active_tokens(flow_uid)
        nodes = list(tokens)
        specs = await self.store.fields(flow_uid, "spec", nodes)
        await self.store.delete(flow_uid)
        by_queue: dict[str, list[str]] = defaultdict(list)
        for node, spec in zip(nodes, specs, strict=True):
            if spec is not None and namespace is not None:
                by_queue[f"{namespace}/{unpack_spec(spec).queue}"].append(
                    active_member(flow_uid, node, tokens[node]))
        await asyncio.gather(*(self.store.drop_active(qid, members)
                               for qid, members in by_queue.items()))

    # ---- reads -------------------------------------------------------------------------

    async def snapshot(self, flow_uid: str) -> FlowSnapshot:
        meta = await self.store.meta(flow_uid)
        if not meta:
            raise FlowNotFound(f"flow {flow_uid} is not in Redis (never added, deleted, "
                               "or expired after ttlSecondsAfterFinished)")
        counts = await self.store.counts(flow_uid)
        failures = await self.store.failures(flow_uid)
        phase = meta["phase"]
        if phase == "Running" and meta.get("suspended") == "1":
            phase = "Suspended"
        return FlowSnapshot(
            phase=phase,
            total=int(meta["total"]),
            counts=counts,
            done=sum(n for state, n in counts.items() if state in TERMINAL_STATES),
            started_at_ms=int(meta["started_at"]) if "started_at" in meta else None,
            finished_at_ms=int(meta["finished_at"]) if "finished_at" in meta else None,
            failures=[NodeFailure(node=n, error=e, attempt=a) for n, e, a in failures],
        )

    async def node_infos(self, flow_uid: str) -> dict[str, NodeInfo]:
        states = await self.store.scan_states(flow_uid)
        nodes = [n for n, _ in states]
        attempts = await self.store.fields(flow_uid, "attempt", nodes)
        results = await self.store.fields(flow_uid, "result", nodes)
        errors = await self.store.fields(flow_uid, "error", nodes)
        progress = await self.store.fields(flow_uid, "progress", nodes)
        return {
            node: NodeInfo(state=state, attempt=int(att or 0), result=_json(res), error=err,
                           progress=_json(prog))
            for (node, state), att, res, err, prog
            in zip(states, attempts, results, errors, progress, strict=True)
        }

    async def _children(self, flow_uid: str, node: str) -> list[str]:
        raw = await self.store.field(flow_uid, "children", node)
        return [] if raw is None else list(json.loads(raw))

    async def children_values(self, flow_uid: str, node: str) -> dict[str, Any]:
        """Return values of the node's completed children, keyed by child name."""
        children = await self._children(flow_uid, node)
        states = await self.store.fields(flow_uid, "state", children)
        done = [c for c, s in zip(children, states, strict=True) if s == "completed"]
        values = await self.store.fields(flow_uid, "result", done)
        return {c: _json(v) for c, v in zip(done, values, strict=True)}

    async def _children_errors(self, flow_uid: str, node: str, state: str) -> dict[str, str]:
        children = await self._children(flow_uid, node)
        states = await self.store.fields(flow_uid, "state", children)
        chosen = [c for c, s in zip(children, states, strict=True) if s == state]
        errors = await self.store.fields(flow_uid, "error", chosen)
        return {c: e or "" for c, e in zip(chosen, errors, strict=True)}

    async def ignored_failures(self, flow_uid: str, node: str) -> dict[str, str]:
        """Errors of the node's children that failed under onFailure=ignore."""
        return await self._children_errors(flow_uid, node, "ignored")

    async def failed_children(self, flow_uid: str, node: str) -> dict[str, str]:
        """Errors of the node's children that failed for good (BullMQ's
        getFailedChildrenValues): a parent runs with such children only when one of them
        was continueParent and released it."""
        return await self._children_errors(flow_uid, node, "failed")

    async def update_progress(self, flow_uid: str, node: str, token: str, progress: Any) -> None:
        await self.store.update_progress(flow_uid, node, token, dumps(progress))

    async def log(self, flow_uid: str, node: str, token: str, message: str) -> None:
        await self.store.log(flow_uid, node, token, message, LOG_CAP)

    async def logs(self, flow_uid: str, *, node: str | None = None,
                   count: int = 1000) -> list[dict[str, str]]:
        """The latest log lines of the flow (fields node, attempt, msg), oldest first."""
        lines = await self.store.stream(flow_uid, "logs", count)
        return [line for line in lines if node is None or line.get("node") == node]

    async def events(self, flow_uid: str, count: int = 1000) -> list[dict[str, str]]:
        """The latest events of the flow (started, completed, retry, failed, flow...)."""
        return await self.store.stream(flow_uid, "events", count)
