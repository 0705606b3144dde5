"""The engine's public value types: what callers get back from `Engine`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from kflow.api.ids import FlowId, QueueId
from kflow.api.models import QueueSpec
from kflow.api.states import FLOW_PHASES, SETTLED_STATES, AttemptOutcome, FlowPhase, NodeState

NODE_STATES: Final = tuple(NodeState)
# Settled: nothing more happens to the node in this run of its flow (api.states).
TERMINAL_STATES: Final = SETTLED_STATES


# What a node reads before it runs: its children's values (by child name), the errors of
# children ignored after failing, and the errors of children that failed for good.
Inputs = tuple[dict[str, Any], dict[str, str], dict[str, str]]


class _Missing:
    """Sentinel type: `complete` without a value uses the one stored by `store_result`."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class FlowNotFound(LookupError):
    """The flow has no keys in Redis (never added, deleted, or expired after its TTL)."""


class FlowStateError(ValueError):
    """The action does not apply to the flow in its current phase."""


class ChildrenError(ValueError):
    """Children a running node adds cannot be added (invalid, or nowhere to add them)."""


@dataclass(frozen=True)
class FlowRef:
    uid: str
    namespace: str
    name: str

    @property
    def id(self) -> FlowId:
        """The flow's id in the engine and the store (its keys carry the namespace)."""
        return FlowId.of(self.namespace, self.uid)


@dataclass(frozen=True)
class QueueConfig:
    """What the engine enforces for one queue, across every worker and dispatcher of it."""

    concurrency: int | None = None
    rate_max: int | None = None
    rate_per_ms: int | None = None
    max_stalled: int = 1  # lease expiries a node may have before its attempt fails as stalled

    @classmethod
    def of(cls, spec: QueueSpec | None, *, max_stalled: int = 1,
           default_concurrency: int | None = None) -> QueueConfig:
        """The one derivation from a Queue's spec (the operator's and `kflow run --local`'s);
        no Queue object means `default_concurrency` and no rate limit."""
        if spec is None:
            return cls(concurrency=default_concurrency, max_stalled=max_stalled)
        rate = spec.rate_limit
        return cls(concurrency=spec.concurrency,  # unset: unlimited
                   rate_max=rate.max if rate is not None else None,
                   rate_per_ms=rate.per if rate is not None else None,  # already milliseconds
                   max_stalled=max_stalled)


@dataclass(frozen=True)
class Attempt:
    flow_uid: str
    namespace: str
    flow_name: str
    node: str
    queue: str  # queue name (not id)
    attempt: int  # 1-based attempt number
    token: str  # fencing token of this attempt
    data: Any
    timeout_ms: int | None
    # How long the node waited in its queue, from ready (or due) to this attempt's start, on
    # Redis's clock; None: not known (an attempt rebuilt from its Job).
    waited_ms: int | None = None
    # The node's inputs, when the take that started it read them (`Engine.take(with_inputs=
    # True)`); None: whoever runs it reads them (`Job.for_attempt`).
    inputs: Inputs | None = field(default=None, compare=False, repr=False)

    @property
    def queue_id(self) -> QueueId:
        return QueueId(self.namespace, self.queue)

    @property
    def flow_id(self) -> FlowId:
        """The id the engine's calls about this attempt's flow take."""
        return FlowId.of(self.namespace, self.flow_uid)


@dataclass(frozen=True)
class NodeFailure:
    node: str
    error: str
    attempt: int


@dataclass(frozen=True)
class FlowSnapshot:
    phase: FlowPhase  # any of FLOW_PHASES
    total: int
    counts: dict[str, int]  # by node state
    done: int  # nodes in a terminal state
    started_at_ms: int | None
    finished_at_ms: int | None
    failures: list[NodeFailure] = field(default_factory=list)  # first failures, capped (10)


@dataclass(frozen=True)
class NodeInfo:
    state: NodeState
    attempt: int
    result: Any
    error: str | None
    progress: Any
    # Redis's clock, ms: first attempt's start in this run of the flow, and when it settled
    started_ms: int | None = None
    finished_ms: int | None = None


class NodeNotFound(LookupError):
    """The flow has no node of that name."""


@dataclass(frozen=True)
class NodeRow:
    """One node in a page of a flow's nodes."""

    name: str
    queue: str
    state: NodeState
    attempt: int
    error: str | None
    progress: Any
    result: Any = None  # the return value of a completed node
    # Redis's clock, ms: when the node's first attempt in this run of the flow started, and
    # when it settled after that (None: not yet, or never started)
    started_ms: int | None = None
    finished_ms: int | None = None


@dataclass(frozen=True)
class NodePage:
    """A page of a flow's nodes and the cursor of the next ("0": that was the last)."""

    rows: list[NodeRow]
    cursor: str


@dataclass(frozen=True)
class NodeDetail:
    """Everything kept about one node of a flow."""

    row: NodeRow
    data: Any
    result: Any
    parents: list[str]
    children: list[str]
    ignored_failures: dict[str, str]
    failed_children: dict[str, str]
    attempt_logs: list[tuple[int, str]]  # (attempt, kept container log tail)
    logs: list[dict[str, str]]  # the node's job.log() lines: id, node, attempt, msg


@dataclass(frozen=True)
class CompleteOutcome:
    accepted: bool
    newly_ready: list[str]
    phase: FlowPhase
    # The attempt the completion handed over to (`Engine.complete_attempts`): started and
    # held for the completing worker, which runs it next.
    handed: Attempt | None = None


@dataclass(frozen=True)
class FailOutcome:
    accepted: bool
    action: AttemptOutcome  # retry | failed | requeued | cancelled | stale
    retry_at_ms: int | None
    phase: FlowPhase


__all__ = [
    "FLOW_PHASES",
    "MISSING",
    "NODE_STATES",
    "TERMINAL_STATES",
    "Attempt",
    "ChildrenError",
    "CompleteOutcome",
    "FailOutcome",
    "FlowNotFound",
    "FlowRef",
    "FlowSnapshot",
    "FlowStateError",
    "Inputs",
    "NodeDetail",
    "NodeFailure",
    "NodeInfo",
    "NodeNotFound",
    "NodePage",
    "NodeRow",
    "QueueConfig",
]
