"""How the store encodes what it writes: a node's options packed into one short spec field,
a compiled node as the add-nodes script's arguments, values as compact JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from kflow.api.models import MAX_PRIORITY
from kflow.graph.dag import CompiledNode, CompiledOptions, MapSource
from kflow.graph.maps import item_data

_ON_FAILURE = {"failParent": "P", "ignore": "I", "remove": "R", "continueParent": "C"}
_BACKOFF = {"fixed": "f", "exponential": "e"}
ROW_WIDTH = 6  # arguments per node of lua/flow/add-nodes.lua


@dataclass(frozen=True, slots=True)
class NodeRoute:
    """The unpacked spec field: what the engine needs to queue a node."""

    queue: str
    rank: int  # its order on the queue (queue_rank)
    timeout_ms: int | None


def queue_rank(priority: int, lifo: bool) -> int:
    """A node's order key on its queue: its priority, and within it LIFO before FIFO.

    Only the store reads it (lua/queue/_order.lua turns it and a sequence into the score);
    everyone else carries it as an opaque int.
    """
    return priority * 2 + (0 if lifo else 1)


@dataclass(frozen=True, slots=True)
class NodeChunk:
    """Nodes written by one add-nodes call, already encoded (only the store reads `args`)."""

    names: tuple[str, ...]
    args: tuple[str, ...]


def _pack_map(source: MapSource) -> dict[str, Any]:
    if source.from_node is not None:
        return {"f": source.from_node, "p": list(source.path)}
    if source.items is not None:
        return {"i": list(source.items)}
    return {"n": source.count}


def unpack_when(raw: str | bytes) -> str | None:
    """A node's condition (`when`) from its spec field; None without one."""
    fields: list[Any] = loads(raw)
    return str(fields[12]) if len(fields) > 12 and isinstance(fields[12], str) else None


def unpack_map(raw: str | bytes) -> MapSource | None:
    """A map node's item source from its spec field; None for any other node."""
    fields: list[Any] = loads(raw)
    if len(fields) <= 11 or not isinstance(fields[11], dict):
        return None
    packed = fields[11]
    if "f" in packed:
        return MapSource(from_node=str(packed["f"]), path=tuple(packed.get("p") or ()))
    if "i" in packed:
        return MapSource(items=tuple(packed["i"]))
    return MapSource(count=int(packed["n"]))


def pack_spec(queue: str, opts: CompiledOptions, for_each: MapSource | None = None,
              when: str | None = None) -> str:
    """A compact JSON array; the index layout is documented in lua/flow/_lib.lua."""
    if not 0 <= opts.priority <= MAX_PRIORITY:
        raise ValueError(f"priority {opts.priority} is out of range 0..{MAX_PRIORITY}")
    return dumps(
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
            1 if opts.lifo else 0,
            *([] if for_each is None and when is None else
              [None if for_each is None else _pack_map(for_each)]),
            *([] if when is None else [when]),
        ])


def unpack_spec(raw: str | bytes) -> NodeRoute:
    fields: list[Any] = loads(raw)
    timeout = int(fields[8])
    lifo = len(fields) > 10 and fields[10] == 1  # flows written before lifo existed: FIFO
    return NodeRoute(queue=str(fields[0]), rank=queue_rank(int(fields[1]), lifo),
                    timeout_ms=None if timeout < 0 else timeout)


def _start(node: CompiledNode) -> str:
    """add-nodes' start code: children to wait for, a leaf's delay, "w" for a leaf with a
    condition to judge, "x" for a map leaf."""
    if node.children:
        return str(len(node.children))
    if node.when is not None:
        return "w"
    return "x" if node.for_each is not None else str(-node.opts.delay_ms)


def node_row(node: CompiledNode) -> list[str]:
    """The add-nodes arguments of one node: name, spec, parents, children, start, data."""
    return [
        node.name,
        pack_spec(node.queue, node.opts, node.for_each, node.when),
        dumps(list(node.parents)) if node.parents else "",
        dumps(list(node.children)) if node.children else "",
        _start(node),
        "" if node.data is None else dumps(node.data),
    ]


def node_chunks(nodes: Iterable[CompiledNode], max_nodes: int, max_bytes: int
                ) -> list[NodeChunk]:
    """Split nodes, in their order, into chunks of at most `max_nodes` nodes and about
    `max_bytes` bytes of arguments (a single larger node gets a chunk of its own)."""
    chunks: list[NodeChunk] = []
    names: list[str] = []
    args: list[str] = []
    size = 0
    for node in nodes:
        row = node_row(node)
        row_size = sum(map(len, row))
        if names and (len(names) >= max_nodes or size + row_size > max_bytes):
            chunks.append(NodeChunk(tuple(names), tuple(args)))
            names, args, size = [], [], 0
        names.append(node.name)
        args.extend(row)
        size += row_size
    if names:
        chunks.append(NodeChunk(tuple(names), tuple(args)))
    return chunks


# Non-string keys become strings, as the standard library makes them; datetimes and
# dataclasses are refused as it refuses them (passed through to no default: TypeError).
_DUMPS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | \
    orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> str:
    """JSON as stored in Redis: compact, UTF-8 kept as is. orjson, and the standard library
    for what orjson refuses (an integer beyond 64 bits, a lone surrogate, a type neither
    knows), which then encodes it or raises TypeError/ValueError as before. Unlike the
    standard library, NaN and infinities are written as null: they are not JSON."""
    try:
        return orjson.dumps(value, option=_DUMPS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# A run of 19 digits or more may be an integer beyond 64 bits, which orjson reads as a float
# (losing digits): such text goes to the standard library, which keeps it exact.
_LONG_DIGITS = re.compile(r"\d{19}")
_LONG_DIGITS_B = re.compile(rb"\d{19}")


def loads(raw: str | bytes | None) -> Any:
    """A stored JSON value; None for a field that is not there. orjson, and the standard
    library for what orjson refuses or would read differently (NaN written by earlier
    versions, integers beyond 64 bits); text that is not JSON raises json.JSONDecodeError."""
    if raw is None:
        return None
    if len(raw) >= 19 and (_LONG_DIGITS_B.search(raw) if isinstance(raw, bytes)
                           else _LONG_DIGITS.search(raw)):
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def text(raw: str | bytes) -> str:
    """Replies come as bytes or str depending on the client's decode_responses."""
    return raw.decode() if isinstance(raw, bytes) else raw


def item_chunk(data: Any, items: Sequence[Any], first: int, max_nodes: int, max_bytes: int
               ) -> list[str]:
    """The data JSON of a map node's items first.. for one expand call: at most `max_nodes`
    items and about `max_bytes` bytes (a single larger item gets a call of its own)."""
    out: list[str] = []
    size = 0
    for index in range(first, min(len(items), first + max_nodes)):
        encoded = dumps(item_data(data, items[index], index))
        if out and size + len(encoded) > max_bytes:
            break
        out.append(encoded)
        size += len(encoded)
    return out


def reply_loads(raw: str | bytes) -> Any:
    """A script's reply, as Lua's cjson wrote it. cjson writes every number as a double with
    14 significant digits and never writes NaN, so orjson reads it as the standard library
    would: no guard needed (the values stored inside are strings, read with `loads`)."""
    return orjson.loads(raw)
