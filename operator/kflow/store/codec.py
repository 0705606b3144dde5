"""How a node's static options are packed into one short field of the flow's spec hash."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kflow.api.models import MAX_PRIORITY
from kflow.graph.dag import NodeOptions

_ON_FAILURE = {"failParent": "P", "ignore": "I", "remove": "R", "continueParent": "C"}
_BACKOFF = {"fixed": "f", "exponential": "e"}


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """The unpacked spec field: what the engine needs to queue a node."""

    queue: str
    priority: int
    timeout_ms: int | None


def pack_spec(queue: str, opts: NodeOptions) -> str:
    """A compact JSON array; the index layout is documented in lua/_flow-lib.lua."""
    if not 0 <= opts.priority <= MAX_PRIORITY:
        raise ValueError(f"priority {opts.priority} is out of range 0..{MAX_PRIORITY}")
    return json.dumps(
        [
            queue,
            opts.priority,
            opts.attempts,
            _BACKOFF[opts.backoff_type],
            opts.backoff_delay_ms,
            -1 if opts.backoff_max_delay_ms is None else opts.backoff_max_delay_ms,
            opts.backoff_jitter,
            opts.delay_ms,
            -1 if opts.timeout_ms is None else opts.timeout_ms,
            _ON_FAILURE[opts.on_failure],
        ],
        separators=(",", ":"),
    )


def unpack_spec(raw: str | bytes) -> NodeSpec:
    fields: list[Any] = json.loads(raw)
    timeout = int(fields[8])
    return NodeSpec(queue=str(fields[0]), priority=int(fields[1]),
                    timeout_ms=None if timeout < 0 else timeout)


def dumps(value: Any) -> str:
    """JSON as stored in Redis: compact, UTF-8 kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def text(raw: str | bytes) -> str:
    """Replies come as bytes or str depending on the client's decode_responses."""
    return raw.decode() if isinstance(raw, bytes) else raw
