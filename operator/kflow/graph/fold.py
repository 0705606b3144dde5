"""Fold a flow's DAG for drawing: siblings alike in parents, children and queue become one box.

Pure: takes the nodes as read from the store, returns what the API's `/graph` endpoint sends.
A 10,000-node fan-out is one group node, so the drawing stays small whatever the flow's size.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# The state a group shows when its members differ: the first of these any member is in, so
# a box with one failure among thousands of successes shows as failed.
STATE_PRECEDENCE: tuple[str, ...] = (
    "failed", "active", "ready", "delayed", "waiting-children", "cancelled", "removed",
    "ignored", "completed",
)
GROUP_MEMBERS_SHOWN = 50  # member names a group lists (the rest are browsed as node pages)
GROUP_ID_PREFIX = "group:"  # a group's id: the prefix and its first member's name


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One node as the store has it: its queue, its state and its children (the nodes it
    waits for)."""

    name: str
    queue: str
    state: str
    children: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Group:
    """The members of one folded box."""

    count: int
    counts: dict[str, int]
    members: list[str]  # the first GROUP_MEMBERS_SHOWN names, sorted


@dataclass(frozen=True, slots=True)
class DrawnNode:
    id: str
    name: str
    queue: str
    state: str
    group: Group | None = None


@dataclass(frozen=True, slots=True)
class FoldedGraph:
    nodes: list[DrawnNode] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)  # (child id, parent id)


def group_state(states: Iterable[str]) -> str:
    """The one state a box of nodes in these states shows (see STATE_PRECEDENCE)."""
    present = set(states)
    for state in STATE_PRECEDENCE:
        if state in present:
            return state
    return min(present) if present else "waiting-children"


def fold(nodes: Iterable[GraphNode], collapse: int) -> FoldedGraph:
    """The DAG of `nodes` with every set of more than `collapse` siblings that share their
    parents, their children and their queue folded into one group node (0: never fold).

    Edges point from a node to its parent (child -> parent), between drawn ids; an edge to a
    child the flow does not list is left out.
    """
    if collapse < 0:
        raise ValueError(f"collapse must be 0 (never fold) or more, got {collapse}")
    by_name = {n.name: n for n in nodes}
    parents: dict[str, list[str]] = defaultdict(list)
    for node in by_name.values():
        for child in node.children:
            if child in by_name:
                parents[child].append(node.name)

    def likeness(node: GraphNode) -> tuple[frozenset[str], frozenset[str], str]:
        return (frozenset(parents.get(node.name, ())),
                frozenset(c for c in node.children if c in by_name), node.queue)

    alike: dict[tuple[frozenset[str], frozenset[str], str], list[str]] = defaultdict(list)
    for node in by_name.values():
        alike[likeness(node)].append(node.name)

    drawn_id: dict[str, str] = {}
    drawn: list[DrawnNode] = []
    for (_, _, queue), names in alike.items():
        if collapse and len(names) > collapse:
            names.sort()
            gid = GROUP_ID_PREFIX + names[0]
            states = Counter(by_name[n].state for n in names)
            for name in names:
                drawn_id[name] = gid
            drawn.append(DrawnNode(
                gid, f"{names[0]} (+{len(names) - 1})", queue, group_state(states),
                Group(len(names), dict(sorted(states.items())), names[:GROUP_MEMBERS_SHOWN])))
        else:
            for name in names:
                drawn_id[name] = name
                drawn.append(DrawnNode(name, name, queue, by_name[name].state))
    edges: dict[tuple[str, str], None] = {}
    for node in by_name.values():
        for child in node.children:
            if child in by_name:
                edges[(drawn_id[child], drawn_id[node.name])] = None
    drawn.sort(key=lambda d: d.id)
    return FoldedGraph(drawn, sorted(edges))
