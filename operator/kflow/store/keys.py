"""Redis key names and queue members: one hash tag per flow, one per queue, so every script
touches one slot. Nothing above the store sees a key name or a member string.

Both tags begin with the namespace (`{<namespace>/<uid>}`, `q:{<namespace>/<queue>}`), so the
keys of namespace N are exactly `<prefix>:{N/*` and `<prefix>:q:{N/*`: the key patterns of
N's Redis ACL user (kube/tenants.py, `tenant_key_patterns`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from operator import attrgetter

from kflow.api.ids import FlowId, QueueId


@dataclass(frozen=True, slots=True)
class FlowKeys:
    """Every key of one flow (`<namespace>/<uid>`), all under the hash tag `{<flow id>}`.

    The field order (after flow_id) is the KEYS layout of every flow script
    (lua/flow/_keys.lua). A script may take a prefix of it (`-- @keys-through <key>`): Redis
    builds each call's KEYS table key by key, so the hot scripts' keys come first.
    """

    flow_id: FlowId
    meta: str  # hash: namespace, name, phase, total, roots_left, times, ttl, suspended, queues
    state: str  # hash node -> state
    spec: str  # hash node -> packed static options (codec.pack_spec)
    parents: str  # hash node -> JSON list (only nodes that have parents)
    children: str  # hash node -> JSON list (only nodes that have children)
    data: str  # hash node -> input JSON (only nodes with data)
    pending: str  # hash node -> dependencies not yet settled (waiting nodes only)
    counts: str  # hash state -> number of nodes
    ready: str  # zset node -> time ready / due: ready and delayed nodes, for reconciliation
    events: str  # stream, bounded: started, completed, retry, failed, flow phase...
    attempt: str  # hash node -> attempts started
    token: str  # hash node -> fencing token of the running attempt (active nodes only)
    result: str  # hash node -> return value JSON
    progress: str  # hash node -> progress JSON of the running attempt
    error: str  # hash node -> last error text
    # hash node -> "<start ms>" once its first attempt of this run started, "<start ms> <end ms>"
    # once it settled after starting (a node that never started has none)
    times: str
    failed: str  # hash node -> "o" failed on its own attempts | "p" by propagation | "c" cancelled
    requeues: str  # hash "i|node" infrastructure retries, "s|node" stalls
    failures: str  # list: first failures, capped
    logs: str  # stream, bounded: log lines of attempts
    # hash "<node>|<attempt>" -> the tail of that attempt's container log (or why its pod never
    # started); "<node>|n" -> the highest attempt kept; "bytes" / "dropped" -> the flow's budget
    podlogs: str

    @property
    def all(self) -> tuple[str, ...]:
        """The keys in KEYS order, as every flow script takes them."""
        return _flow_keys_in_order(self)


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Every key of one queue (`<namespace>/<queue>`), all under the hash tag `{<queue id>}`.

    The field order (after queue_id) is the KEYS layout of every queue script
    (lua/queue/_keys.lua).
    """

    queue_id: QueueId
    ready: str  # zset "<uid>|<node>" -> score from rank and sequence (lua/queue/_order.lua)
    active: str  # zset "<uid>|<node>|<token>" -> lease deadline ms
    delayed: str  # zset "<uid>|<node>|<rank>" -> due ms
    config: str  # hash concurrency, rate_max, rate_per_ms, max_stalled
    rate: str  # zset of takes in the rate-limit window
    seq: str  # string: FIFO sequence
    takes: str  # stream: one entry (n taken) per take call, bounded

    @property
    def all(self) -> tuple[str, ...]:
        """The keys in KEYS order, as every queue script takes them."""
        return _queue_keys_in_order(self)


# A field of every flow's token hash that a batch start writes, with a value long enough that
# Redis keeps the hash a hash table instead of a listpack (lua/flow/_lib.lua, TOKEN_ANCHOR):
# not a node, and no node can be named so (node names start with a letter or digit).
TOKEN_ANCHOR = "~"

# The key lists of the two script groups, stated once: the dataclass fields above.
FLOW_KEY_NAMES: tuple[str, ...] = tuple(f.name for f in fields(FlowKeys))[1:]
QUEUE_KEY_NAMES: tuple[str, ...] = tuple(f.name for f in fields(QueueKeys))[1:]
_flow_keys_in_order = attrgetter(*FLOW_KEY_NAMES)
_queue_keys_in_order = attrgetter(*QUEUE_KEY_NAMES)


# A flow's keys are asked for at every step of it (a four-node chain: about a dozen times);
# building the 21 names each time was ~7% of the chain benchmark's worker CPU (cProfile).
# `typed`: a bare string equal to a FlowId must still be refused, not answered from the cache.
@lru_cache(maxsize=4096, typed=True)
def flow_keys(prefix: str, flow_id: FlowId) -> FlowKeys:
    if not isinstance(flow_id, FlowId):  # a bare uid would make keys outside every namespace
        raise TypeError(f"flow keys need a FlowId (namespace/uid), got {flow_id!r}")
    if "{" in flow_id or "}" in flow_id or "|" in flow_id:
        raise ValueError(f'flow "{flow_id}" must not contain "{{", "}}" or "|"')
    tag = f"{prefix}:{{{flow_id}}}"
    return FlowKeys(flow_id, *(f"{tag}:{name}" for name in FLOW_KEY_NAMES))


def namespace_key_patterns(prefix: str, namespace: str) -> tuple[str, str]:
    """The glob patterns that match every flow and queue key of `namespace` and nothing of
    another one: the `/` after the name stops `a` from matching `ab`'s keys."""
    return f"{prefix}:{{{namespace}/*", f"{prefix}:q:{{{namespace}/*"


def queue_keys(prefix: str, queue_id: QueueId) -> QueueKeys:
    if "{" in queue_id or "}" in queue_id:
        raise ValueError(f'queue "{queue_id}" must not contain "{{" or "}}"')
    tag = f"{prefix}:q:{{{queue_id}}}"
    return QueueKeys(queue_id, *(f"{tag}:{name}" for name in QUEUE_KEY_NAMES))


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
