"""The only place that speaks Redis: keys, Lua scripts and the typed store over them."""

from kflow.store.codec import (
    NodeChunk,
    NodeRoute,
    item_chunk,
    node_chunks,
    pack_spec,
    queue_rank,
    unpack_spec,
)
from kflow.store.keys import (
    FLOW_KEY_NAMES,
    QUEUE_KEY_NAMES,
    FlowKeys,
    QueueKeys,
    flow_keys,
    queue_keys,
)
from kflow.store.redis_store import PAGE, RedisStore
from kflow.store.scripts import GROUPS, Scripts, script_sources
from kflow.store.types import (
    NO_INPUTS,
    Completion,
    FlowMeta,
    FlowStep,
    Lease,
    NodeInputs,
    Queued,
    QueueEntry,
    RedisClient,
    Settled,
    Started,
    decode_step,
)

__all__ = [
    "FLOW_KEY_NAMES",
    "GROUPS",
    "NO_INPUTS",
    "PAGE",
    "QUEUE_KEY_NAMES",
    "Completion",
    "FlowKeys",
    "FlowMeta",
    "FlowStep",
    "Lease",
    "NodeChunk",
    "NodeInputs",
    "NodeRoute",
    "QueueEntry",
    "QueueKeys",
    "Queued",
    "RedisClient",
    "RedisStore",
    "Scripts",
    "Settled",
    "Started",
    "decode_step",
    "flow_keys",
    "item_chunk",
    "node_chunks",
    "pack_spec",
    "queue_keys",
    "queue_rank",
    "script_sources",
    "unpack_spec",
]
