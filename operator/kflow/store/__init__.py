"""Redis keys, Lua scripts and their wrappers: the only place that speaks Redis."""

from kflow.store.codec import NodeSpec, pack_spec, unpack_spec
from kflow.store.keys import FLOW_KEY_NAMES, FlowKeys, QueueKeys, flow_keys, queue_keys
from kflow.store.redis_store import FlowReply, Queued, RedisStore, Started
from kflow.store.scripts import Scripts, script_sources

__all__ = [
    "FLOW_KEY_NAMES",
    "FlowKeys",
    "FlowReply",
    "NodeSpec",
    "QueueKeys",
    "Queued",
    "RedisStore",
    "Scripts",
    "Started",
    "flow_keys",
    "pack_spec",
    "queue_keys",
    "script_sources",
    "unpack_spec",
]
