"""Redis key names: one hash tag per flow, one per queue, so every script touches one slot."""

from __future__ import annotations

from dataclasses import dataclass

# Order matters: it is the KEYS layout of every flow script (see lua/_flow-keys.lua).
FLOW_KEY_NAMES: tuple[str, ...] = (
    "meta",  # hash: namespace, name, phase, total, roots_left, times, ttl, suspended, queues
    "state",  # hash node -> state
    "spec",  # hash node -> packed static options (codec.pack_spec)
    "parents",  # hash node -> JSON list (only nodes that have parents)
    "children",  # hash node -> JSON list (only nodes that have children)
    "data",  # hash node -> input JSON (only nodes with data)
    "pending",  # hash node -> dependencies not yet settled (waiting nodes only)
    "attempt",  # hash node -> attempts started
    "token",  # hash node -> fencing token of the running attempt (active nodes only)
    "result",  # hash node -> return value JSON
    "error",  # hash node -> last error text
    "progress",  # hash node -> progress JSON of the running attempt
    "counts",  # hash state -> number of nodes
    "ready",  # zset node -> time ready / due: ready and delayed nodes, for reconciliation
    "failed",  # hash node -> "o" failed on its own attempts | "p" failed by propagation
    "requeues",  # hash "i|node" infrastructure retries, "s|node" stalls
    "failures",  # list: first failures, capped
    "events",  # stream, bounded: started, completed, retry, failed, flow phase...
    "logs",  # stream, bounded: log lines of attempts
)


@dataclass(frozen=True, slots=True)
class FlowKeys:
    """Every key of one flow, all under the hash tag `{<uid>}`."""

    uid: str
    all: tuple[str, ...]

    def __getattr__(self, name: str) -> str:
        try:
            return self.all[FLOW_KEY_NAMES.index(name)]
        except ValueError:
            raise AttributeError(name) from None


def flow_keys(prefix: str, uid: str) -> FlowKeys:
    if "{" in uid or "}" in uid or "|" in uid:
        raise ValueError(f'flow uid "{uid}" must not contain "{{", "}}" or "|"')
    tag = f"{prefix}:{{{uid}}}"
    return FlowKeys(uid=uid, all=tuple(f"{tag}:{name}" for name in FLOW_KEY_NAMES))


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue (`<namespace>/<queue>`), all under the hash tag `{<queue id>}`."""

    queue_id: str
    ready: str  # zset "<uid>|<node>" -> priority * 2^32 + FIFO sequence
    active: str  # zset "<uid>|<node>|<token>" -> lease deadline ms
    delayed: str  # zset "<uid>|<node>|<priority>" -> due ms
    config: str  # hash concurrency, rate_max, rate_per_ms, max_stalled
    rate: str  # zset of takes in the rate-limit window
    seq: str  # string: FIFO sequence
    takes: str  # stream: one entry (n taken) per take call, bounded


def queue_keys(prefix: str, queue_id: str) -> QueueKeys:
    if "{" in queue_id or "}" in queue_id:
        raise ValueError(f'queue "{queue_id}" must not contain "{{" or "}}"')
    tag = f"{prefix}:q:{{{queue_id}}}"
    return QueueKeys(
        queue_id=queue_id,
        ready=f"{tag}:ready",
        active=f"{tag}:active",
        delayed=f"{tag}:delayed",
        config=f"{tag}:config",
        rate=f"{tag}:rate",
        seq=f"{tag}:seq",
        takes=f"{tag}:takes",
    )


def queue_member(uid: str, node: str) -> str:
    return f"{uid}|{node}"


def active_member(uid: str, node: str, token: str) -> str:
    return f"{uid}|{node}|{token}"


def split_member(member: str) -> tuple[str, str]:
    """`<uid>|<node>` -> (uid, node); node names may contain "|", uids never do."""
    uid, _, node = member.partition("|")
    return uid, node


def split_active(member: str) -> tuple[str, str, str]:
    """`<uid>|<node>|<token>` -> (uid, node, token); tokens never contain "|"."""
    head, _, token = member.rpartition("|")
    uid, node = split_member(head)
    return uid, node, token
