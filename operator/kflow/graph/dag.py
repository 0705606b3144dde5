"""The compiled form of a Flow: the validated DAG every other layer consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kflow.api.models import BackoffType, OnFailure


@dataclass(frozen=True, slots=True)
class CompiledOptions:
    """A node's options after the flow's defaults are merged in; durations in milliseconds."""

    attempts: int = 1
    backoff_type: BackoffType = "fixed"
    backoff_delay_ms: int = 0
    backoff_max_delay_ms: int | None = None
    backoff_jitter: float = 0.0  # 0..1: the share of each delay that is randomised
    priority: int = 0  # lower runs first, as in BullMQ; 0 is the highest
    lifo: bool = False  # within its priority, taken before the nodes queued earlier
    delay_ms: int = 0  # wait this long after becoming ready before the first attempt
    timeout_ms: int | None = None
    on_failure: OnFailure = "failParent"


@dataclass(frozen=True, slots=True)
class MapSource:
    """Where a map node's (`forEach`) items come from: the value of the node `from_node` at
    `path`, a literal list, or the numbers 0..count-1. Exactly one is set."""

    from_node: str | None = None
    path: tuple[str, ...] = ()  # keys (or list indexes) into the from node's value
    items: tuple[Any, ...] | None = None
    count: int | None = None


def item_name(node: str, index: int) -> str:
    """The name of item `index` of map node `node`: `[` never occurs in a node's own name."""
    return f"{node}[{index}]"


def split_item_name(name: str) -> tuple[str, int] | None:
    """(map node, index) of an item's name (item_name's inverse); None for any other node."""
    if not name.endswith("]"):
        return None
    head, _, index = name[:-1].rpartition("[")
    return (head, int(index)) if head and index.isdigit() else None


@dataclass(frozen=True, slots=True)
class CompiledNode:
    """One node of a compiled flow, with edges in both directions."""

    name: str
    queue: str
    data: Any  # JSON-compatible
    opts: CompiledOptions
    children: tuple[str, ...]  # a map node's from node is among them: it waits for it
    parents: tuple[str, ...]
    for_each: MapSource | None = None  # a map node: it runs as one item node per item
    when: str | None = None  # its condition (CEL), judged once its children are done


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    """A validated DAG: unique names, every reference resolved, no cycle.

    `nodes` is ordered children-before-parents (a topological order from the leaves up),
    so a writer that adds nodes in this order never writes a parent before its children.
    """

    nodes: dict[str, CompiledNode]
    roots: tuple[str, ...]  # nodes that are nobody's child
    leaves: tuple[str, ...]  # nodes with no children: ready as soon as the flow starts
    # The exit handlers (spec.onExit): their own graph, run once the flow has ended.
    on_exit: CompiledFlow | None = None
    # spec.defaults as written (JSON), kept with the flow for nodes added while it runs
    # (job.add_children): their options inherit them as the static nodes' do.
    defaults: dict[str, Any] | None = None

    @property
    def queues(self) -> frozenset[str]:
        return frozenset(node.queue for node in self.nodes.values())
