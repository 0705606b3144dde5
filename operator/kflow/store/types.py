"""The values the store takes and returns: domain values, never Redis encodings."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeAlias, TypeVar

from kflow.api.ids import FlowId, QueueId
from kflow.api.states import AttemptOutcome, FlowPhase, NodeState, StartStatus
from kflow.graph.dag import MapSource
from kflow.store.codec import loads, reply_loads

if TYPE_CHECKING:
    import redis.asyncio
    import redis.asyncio.cluster

# The client the store is built on: one server or a cluster (kflow.store.connect opens one).
RedisClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"

R = TypeVar("R")


class Queued(NamedTuple):
    """A node a flow step made ready (due 0) or delayed (due ms): it goes on its queue."""

    node: str
    queue: str  # queue name, in the flow's namespace
    rank: int  # order on the queue (codec.queue_rank)
    due: int


# A node of a flow going onto a queue: (flow id, the node as its flow step queued it); ready
# (due 0) in rank order, or delayed until due. A plain pair: the queue step builds one per
# node it queues, up to 100,000 when a big fan-out starts.
QueueEntry: TypeAlias = tuple[FlowId, Queued]


class Lease(NamedTuple):
    """A queue's hold on a node while an attempt (its token) runs: ends by settling the
    attempt, or by running out."""

    flow: FlowId
    node: str
    token: str


class Completion(NamedTuple):
    """One attempt to complete: with its value, or with the one it stored earlier."""

    node: str
    token: str
    value: Any = None
    use_stored: bool = False
    queue: str = ""  # the node's queue name, when the caller knows it (from its take)


class Settled(NamedTuple):
    """A row of an attempt-settling step (complete, fail, release, stall)."""

    accepted: bool  # the attempt was current (its token held the node): it was settled
    queue: str  # the node's queue name: where its lease is held
    outcome: AttemptOutcome
    at_ms: int | None  # retry: when it runs again; requeued: now
    # A completion that handed over (lua/flow/complete.lua): the node it started at once for
    # the same worker, under handed_token(the completed attempt's token).
    handed: Started | None = None


class NodeInputs(NamedTuple):
    """What a node reads before it runs: (child, value) of completed children, (child,
    error) of children ignored after failing, (child, error) of children that failed for
    good."""

    values: list[tuple[str, Any]]
    ignored: list[tuple[str, str]]
    failed: list[tuple[str, str]]
    maps: list[tuple[str, int]] = []  # (child, items) of completed map children: read apart
    paged: bool = False  # too many children to read in one call: read them a page at a time


class Started(NamedTuple):
    """A row of the start step: one node the queue handed out."""

    node: str
    status: StartStatus
    attempt: int  # ok: the 1-based attempt number
    data: Any  # ok: the node's input
    timeout_ms: int | None  # ok: the attempt's timeout
    due: int  # early: when the node is due; ok: ms it waited since ready or due (-1: unknown)
    rank: int  # early: its queue rank, to put it back on the queue's delayed set
    inputs: NodeInputs | None = None  # ok, when asked for: what the node reads before it runs


@dataclass(frozen=True, slots=True)
class FlowStep(Generic[R]):
    """The reply of every flow-step script (lua/flow/_reply.lua): where the flow is after
    the step, one row per item the step was given, and what the engine's queue step owes."""

    phase: FlowPhase  # as a reader sees it: Suspended for a suspended running flow
    namespace: str
    name: str
    rows: list[R]
    queued: list[Queued]  # made ready or delayed: to put on their queues if Running
    expand: tuple[str, ...] = ()  # map nodes made ready: the engine adds their items
    decide: tuple[str, ...] = ()  # nodes whose condition (when) the engine must judge
    exits: bool = False  # the flow has ended and has exit handlers (spec.onExit) to start

    def queue_id(self, queue: str) -> QueueId:
        return QueueId.of(self.namespace, queue)


# The decoders below build rows by the thousand per second: tuple.__new__ skips the Python
# level __new__ a NamedTuple adds (half the cost of each row) and gives the same value.
_row = tuple.__new__


def _rows(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {}.
    return value if isinstance(value, list) else []


def decode_step(raw: str | bytes, row: Callable[[Any], R]) -> FlowStep[R]:
    """The one decoder of the flow-step envelope; `row` decodes the script's own rows."""
    phase, namespace, name, rows, queued, expand, decide, exits = reply_loads(raw)
    return FlowStep(
        phase=FlowPhase.parse(phase), namespace=str(namespace), name=str(name),
        rows=[row(r) for r in _rows(rows)],
        # cjson gives the rows' own types (strings, integers): no conversion per row.
        queued=[_row(Queued, q) for q in _rows(queued)],
        expand=tuple(_rows(expand)), decide=tuple(_rows(decide)), exits=exits is True)


def settled_row(r: Any) -> Settled:
    return _row(Settled, (bool(r[0]), str(r[1]), AttemptOutcome.parse(r[2]),
                          None if r[3] is False else int(r[3]),
                          started_row(r[4]) if len(r) > 4 else None))


def handed_token(token: str) -> str:
    """The token of the attempt a completion under `token` hands over to: 16 hex digits of
    its SHA-1, as lua/flow/_lib.lua (handed_token) computes it. Derived, not drawn, so that
    the stalled sweep finds a node handed over from the completed attempt's lease alone."""
    return hashlib.sha1(token.encode(), usedforsecurity=False).hexdigest()[:16]


def _pairs(flat: Any) -> list[tuple[str, str]]:
    items = _rows(flat)
    return [(str(items[i]), str(items[i + 1])) for i in range(0, len(items), 2)]


# A leaf's inputs, shared: nothing changes a NodeInputs' lists (the engine copies them), and
# the engine knows a leaf by it (`is NO_INPUTS`) to skip reading anything more.
NO_INPUTS = NodeInputs([], [], [], [], False)


def inputs_row(x: Any) -> NodeInputs:
    """One node's inputs as flow/_inputs.lua gives them (flat name/value lists; "" for a
    node without children)."""
    if not x or not (x[0] or x[1] or x[2] or x[3] or x[4] is True):  # cjson: {} when empty
        return NO_INPUTS
    values, maps = _rows(x[0]), _rows(x[3])
    return _row(NodeInputs, (
        [(str(values[i]), loads(values[i + 1])) for i in range(0, len(values), 2)],
        _pairs(x[1]), _pairs(x[2]),
        [(str(maps[i]), int(maps[i + 1])) for i in range(0, len(maps), 2)], x[4] is True))


def started_row(r: Any) -> Started:
    status = StartStatus.parse(r[1])
    timeout = int(r[4])
    inputs = r[7] if len(r) > 7 else False
    return _row(Started, (str(r[0]), status, int(r[2]),
                          loads(r[3]) if status is StartStatus.OK else None,
                          None if timeout < 0 else timeout, int(r[5]), int(r[6]),
                          None if inputs is False else inputs_row(inputs)))


@dataclass(frozen=True, slots=True)
class FlowMeta:
    """A flow's own record (its meta hash)."""

    namespace: str
    name: str
    phase: FlowPhase  # as stored: Pending, Running, Succeeded, Failed or Cancelled
    suspended: bool
    total: int
    chunks: int
    written: int
    started_at_ms: int | None
    finished_at_ms: int | None
    expire_at_ms: int | None
    # the queues its nodes are on (nodes added while it runs can bring new ones)
    queues: tuple[str, ...] = ()
    defaults: dict[str, Any] | None = None  # its spec.defaults, for nodes added as it runs

    @property
    def shown_phase(self) -> FlowPhase:
        """The phase a reader sees: a suspended running flow shows as Suspended."""
        if self.phase is FlowPhase.RUNNING and self.suspended:
            return FlowPhase.SUSPENDED
        return self.phase

    @classmethod
    def decode(cls, raw: dict[str, str]) -> FlowMeta:
        def ms(field: str) -> int | None:
            return int(raw[field]) if field in raw else None

        return cls(namespace=raw.get("namespace", ""), name=raw.get("name", ""),
                   phase=FlowPhase.parse(raw["phase"]), suspended=raw.get("suspended") == "1",
                   total=int(raw.get("total", 0)), chunks=int(raw.get("chunks", -1)),
                   written=int(raw.get("written", 0)), started_at_ms=ms("started_at"),
                   finished_at_ms=ms("finished_at"), expire_at_ms=ms("expire_at"),
                   queues=tuple(loads(raw.get("queues") or "[]")),
                   defaults=loads(raw["defaults"]) if raw.get("defaults") else None)


@dataclass(frozen=True, slots=True)
class MapPlan:
    """What expanding one map node needs (RedisStore.map_plan)."""

    state: NodeState | None  # the map node's state (None: the flow has no such node)
    source: MapSource | None  # where its items come from (None: not a map node)
    data: Any  # its data (an object or None): each item's data starts from it
    added: int  # items added so far
    from_value: Any  # the value of its from node (None when the source is not a node)


@dataclass(frozen=True, slots=True)
class Judgement:
    """What judging one node's condition needs (RedisStore.judgement)."""

    state: NodeState | None  # the node's state (None: the flow has no such node)
    when: str | None  # its condition
    data: Any  # its data
    outcomes: dict[str, str]  # child -> its state (settled children: their outcome)


class AddedChildren(NamedTuple):
    """What RedisStore.add_children reports: a status (added, already, stale, target,
    exists) and its detail: the names added, or what stopped the add."""

    status: str
    names: tuple[str, ...]
    detail: str
