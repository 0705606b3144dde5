"""Exit handlers (spec.onExit): their flow's id, how their graph is kept with the main flow,
and the data each exit node is given once the main flow has ended."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from typing import Any, Final

from kflow.api.ids import FlowId
from kflow.engine.types import NodeFailure
from kflow.graph.dag import CompiledFlow, CompiledNode, CompiledOptions, MapSource

# The exit flow of `<namespace>/<uid>` is `<namespace>/<uid>.exit`: a flow of its own (own
# keys, own hash tag), so nothing of the main flow's scripts or phase is shared with it.
EXIT_SUFFIX: Final = ".exit"


def exit_flow_id(flow_id: FlowId) -> FlowId:
    """The id of the flow that runs `flow_id`'s exit handlers."""
    return FlowId.of(flow_id.namespace, flow_id.uid + EXIT_SUFFIX)


def is_exit_flow(flow_id: FlowId) -> bool:
    return flow_id.uid.endswith(EXIT_SUFFIX)


def main_flow_id(flow_id: FlowId) -> FlowId:
    """The flow whose exit handlers `flow_id` runs (itself when it is no exit flow)."""
    if not is_exit_flow(flow_id):
        return flow_id
    return FlowId.of(flow_id.namespace, flow_id.uid[: -len(EXIT_SUFFIX)])


def encode_graph(compiled: CompiledFlow) -> str:
    """The exit graph as JSON, every field of its nodes (at most a few hundred nodes)."""
    nodes = [asdict(node) for node in compiled.nodes.values()]
    return json.dumps({"nodes": nodes, "roots": compiled.roots, "leaves": compiled.leaves},
                      separators=(",", ":"), ensure_ascii=False)


def _node(raw: dict[str, Any]) -> CompiledNode:
    known = {f.name for f in fields(CompiledNode)}
    values = {k: v for k, v in raw.items() if k in known}
    values["opts"] = CompiledOptions(**values["opts"])
    values["children"] = tuple(values["children"])
    values["parents"] = tuple(values["parents"])
    source = values.get("for_each")
    if source is not None:
        items = source.get("items")
        values["for_each"] = MapSource(
            from_node=source.get("from_node"), path=tuple(source.get("path") or ()),
            items=None if items is None else tuple(items), count=source.get("count"))
    return CompiledNode(**values)


def decode_graph(encoded: str) -> CompiledFlow:
    raw = json.loads(encoded)
    nodes = [_node(node) for node in raw["nodes"]]
    return CompiledFlow(nodes={n.name: n for n in nodes}, roots=tuple(raw["roots"]),
                        leaves=tuple(raw["leaves"]))


def flow_outcome(name: str, namespace: str, phase: str,
                 failures: Sequence[NodeFailure]) -> dict[str, Any]:
    """What every exit node reads as `data.flow`."""
    return {"name": name, "namespace": namespace, "phase": phase,
            "failures": [{"node": f.node, "error": f.error, "attempt": f.attempt}
                         for f in failures]}


def with_outcome(compiled: CompiledFlow, outcome: dict[str, Any]) -> CompiledFlow:
    """The exit graph with `flow` (the main flow's outcome) added to each node's data."""
    nodes = {name: replace(node, data={**(node.data or {}), "flow": outcome})
             for name, node in compiled.nodes.items()}
    return replace(compiled, nodes=nodes)
