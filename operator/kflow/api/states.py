"""Node states, flow phases and script outcomes: each defined once, compared as these types.

They are `StrEnum`s, so a value still equals the plain string Redis stores and callers compare
with (`NodeState.READY == "ready"`), while a type checker sees which strings can occur.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Self


class _Parsed(StrEnum):
    """A StrEnum read back from Redis many times a second: `parse` finds the member by dict,
    several times faster than calling the enum, with the same ValueError for a stranger."""

    @classmethod
    def parse(cls, value: str) -> Self:
        try:
            return cls._value2member_map_[value]  # type: ignore[return-value]
        except KeyError:
            raise ValueError(f"{value!r} is not a valid {cls.__name__}") from None


class NodeState(_Parsed):
    """Where one node of a flow is in its run."""

    WAITING_CHILDREN = "waiting-children"  # dependencies not settled yet
    EXPANDING = "expanding"  # a map node (forEach) whose items are being added
    DECIDING = "deciding"  # its children are done; its condition (when) is being judged
    DELAYED = "delayed"  # ready, but waiting for its start delay or retry backoff
    READY = "ready"
    ACTIVE = "active"  # an attempt runs, fenced by its token
    COMPLETED = "completed"
    FAILED = "failed"
    IGNORED = "ignored"  # failed under onFailure=ignore: its parent goes on without it
    REMOVED = "removed"  # failed under onFailure=remove
    CANCELLED = "cancelled"  # will not run because its flow ended (failed or cancelled) first
    SKIPPED = "skipped"  # its condition (when) was false: settled, its parents go on


# Settled: nothing more happens to the node in this run of its flow.
SETTLED_STATES: Final = frozenset({NodeState.COMPLETED, NodeState.FAILED, NodeState.IGNORED,
                                   NodeState.REMOVED, NodeState.CANCELLED, NodeState.SKIPPED})
# A node the queues may hand out: on the flow's ready set, due now or later.
QUEUEABLE_STATES: Final = frozenset({NodeState.READY, NodeState.DELAYED})


class FlowPhase(_Parsed):
    """The phase of a flow as readers see it (a suspended running flow shows as Suspended)."""

    PENDING = "Pending"  # being written, chunk by chunk
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SUSPENDED = "Suspended"
    # Only in a script's reply: the flow has no keys (never added, deleted, or expired).
    MISSING = "Missing"


# Phases a flow has in Redis or shows to readers (MISSING is not one: it means no flow).
FLOW_PHASES: Final = (FlowPhase.PENDING, FlowPhase.RUNNING, FlowPhase.SUCCEEDED,
                      FlowPhase.FAILED, FlowPhase.CANCELLED, FlowPhase.SUSPENDED)
# The flow has ended: nothing new starts.
TERMINAL_PHASES: Final = frozenset({FlowPhase.SUCCEEDED, FlowPhase.FAILED, FlowPhase.CANCELLED})
# Ended before every node settled: the nodes that never started are cancelled (wound down).
ENDED_EARLY_PHASES: Final = frozenset({FlowPhase.FAILED, FlowPhase.CANCELLED})


class AttemptOutcome(_Parsed):
    """What became of an attempt a caller settled (complete, fail, release, a lapsed lease)."""

    COMPLETED = "completed"
    # it added children to itself (job.add_children): it runs again once they are done
    WAITING = "waiting"
    RELEASED = "released"  # handed back: ready again, no attempt spent
    RETRY = "retry"  # failed; runs again after its backoff
    FAILED = "failed"  # failed for good (onFailure applies)
    REQUEUED = "requeued"  # lost (infrastructure, stalled lease): ready again, no attempt spent
    CANCELLED = "cancelled"  # cut off by the end of its flow
    STALE = "stale"  # not the node's current attempt (older token, node settled, flow gone)


class StartStatus(_Parsed):
    """Why a node the queue handed out did or did not start."""

    OK = "ok"  # started: attempt number, data and timeout filled in
    SUSPENDED = "suspended"  # flow suspended: stays ready, re-queued on resume
    EARLY = "early"  # delayed and not due yet: goes back to the queue's delayed set
    GONE = "gone"  # flow missing, ended or cancelled, or the node is no longer ready


class AddStatus(_Parsed):
    """What creating a flow's record found."""

    CREATED = "created"
    RESUME = "resume"  # an interrupted add left it Pending: write the missing chunks
    EXISTS = "exists"


__all__ = [
    "ENDED_EARLY_PHASES",
    "FLOW_PHASES",
    "QUEUEABLE_STATES",
    "SETTLED_STATES",
    "TERMINAL_PHASES",
    "AddStatus",
    "AttemptOutcome",
    "FlowPhase",
    "NodeState",
    "StartStatus",
]
