"""How the CLI draws flows: the tree of node states (local runs and cluster flows alike), the
summary of a flow, durations, and the DAG as Mermaid or DOT."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kflow.api.states import TERMINAL_PHASES
from kflow.engine import NodeInfo
from kflow.graph import fold
from kflow.graph.dag import CompiledFlow, split_item_name


def short_json(value: Any, limit: int = 60) -> str:
    """`value` as compact JSON (repr if it is not JSON), cut to `limit` characters."""
    try:
        text = json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return clip(text, limit)


def clip(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(text: str | None, limit: int = 160) -> str:
    """The first non-blank line of an error, cut to `limit` characters."""
    stripped = (text or "").strip()
    return stripped.splitlines()[0][:limit] if stripped else ""


MARKS_UNICODE = {
    "completed": "✔", "failed": "✘", "active": "▶", "ready": "○", "waiting-children": "◌",
    "delayed": "◷", "ignored": "⊘", "removed": "⊖", "cancelled": "⊗", "skipped": "↷",
    "expanding": "⋯", "deciding": "⋯",
}
MARKS_ASCII = {
    "completed": "+", "failed": "x", "active": ">", "ready": "o", "waiting-children": ".",
    "delayed": "~", "ignored": "-", "removed": "-", "cancelled": "/", "skipped": "s",
    "expanding": "*", "deciding": "?",
}
# Rich styles per node state and flow phase (the terminal colours; plain text elsewhere).
STATE_STYLES = {
    "completed": "green", "failed": "bold red", "active": "cyan", "ready": "blue",
    "waiting-children": "dim", "delayed": "yellow", "ignored": "magenta", "removed": "dim",
    "cancelled": "yellow", "skipped": "dim", "expanding": "blue", "deciding": "blue",
}
PHASE_STYLES = {
    "Succeeded": "bold green", "Failed": "bold red", "Cancelled": "bold yellow",
    "Running": "bold cyan", "Pending": "bold blue", "Suspended": "bold magenta",
}
MAX_SHOWN_CHILDREN = 12
MAX_INDENT_DEPTH = 24


@dataclass(frozen=True)
class TreeShape:
    """What drawing a tree needs of a DAG: its roots, each node's queue and children."""

    roots: Sequence[str]
    queues: Mapping[str, str]
    children: Mapping[str, Sequence[str]]
    maps: frozenset[str] = frozenset()  # map nodes (forEach): their items are their children

    @classmethod
    def of_compiled(cls, compiled: CompiledFlow) -> TreeShape:
        return cls(
            roots=compiled.roots,
            queues={name: node.queue for name, node in compiled.nodes.items()},
            children={name: node.children for name, node in compiled.nodes.items()},
            maps=frozenset(n.name for n in compiled.nodes.values() if n.for_each is not None),
        )

    @classmethod
    def of_nodes(cls, nodes: Iterable[fold.GraphNode], maps: frozenset[str] = frozenset()
                 ) -> TreeShape:
        """From the nodes as the store has them (Engine.graph_nodes): nodes added while the
        flow ran (job.add_children) are there too."""
        listed = list(nodes)  # a forEach's items are among their map node's children
        has_parent = {child for node in listed for child in node.children}
        return cls(roots=[n.name for n in listed if n.name not in has_parent],
                   queues={n.name: n.queue for n in listed},
                   children={n.name: tuple(n.children) for n in listed}, maps=maps)

    def with_items(self, names: Iterable[str]) -> TreeShape:
        """This shape with the items of its map nodes (`<map>[<index>]`, added while the
        flow runs) among `names` drawn under their map node, in item order, before its
        other children."""
        found: dict[str, list[tuple[int, str]]] = {}
        for name in names:
            item = None if name in self.queues else split_item_name(name)
            if item is not None and item[0] in self.queues:
                found.setdefault(item[0], []).append((item[1], name))
        if not found:
            return self
        children = dict(self.children)
        queues = dict(self.queues)
        for head, items in found.items():
            ordered = [name for _, name in sorted(items)]
            children[head] = [*ordered, *children.get(head, ())]
            queues.update((name, self.queues[head]) for name in ordered)
        return TreeShape(self.roots, queues, children, self.maps | frozenset(found))

    @classmethod
    def of_graph(cls, graph: Mapping[str, Any]) -> TreeShape:
        """From the API's /graph body (collapse=0): nodes, and edges from child to parent."""
        ids = {node["id"]: node for node in graph.get("nodes", [])}
        children: dict[str, list[str]] = {node["name"]: [] for node in ids.values()}
        has_parent: set[str] = set()
        for child_id, parent_id in graph.get("edges", []):
            child, parent = ids.get(child_id), ids.get(parent_id)
            if child is None or parent is None:
                continue
            children[parent["name"]].append(child["name"])
            has_parent.add(child["name"])
        roots = [node["name"] for node in ids.values() if node["name"] not in has_parent]
        queues = {node["name"]: str(node.get("queue") or "") for node in ids.values()}
        return cls(roots=roots, queues=queues, children=children)


def node_info_of(summary: Mapping[str, Any]) -> NodeInfo:
    """A NodeInfo from the API's NodeSummary (result only when the server sends one)."""
    return NodeInfo(
        state=summary.get("state") or "unknown",  # type: ignore[arg-type]
        attempt=int(summary.get("attempt") or 0),
        result=summary.get("result"),
        error=summary.get("error"),
        progress=summary.get("progress"),
        started_ms=_ms(summary.get("startedAt")),
        finished_ms=_ms(summary.get("finishedAt")),
    )


def _ms(value: str | None) -> int | None:
    at = parse_time(value)
    return None if at is None else round(at.timestamp() * 1000)


def describe_node(
    name: str, queue: str, info: NodeInfo | None, *, unicode: bool = True,
    map_node: bool = False,
) -> str:
    """One line of the tree: mark, name, queue, state and what matters in that state."""
    state = info.state if info is not None else "unknown"
    marks = MARKS_UNICODE if unicode else MARKS_ASCII
    text = f"{marks.get(state, '?')} {name} [{queue}] {state}"
    if info is None:
        return text
    record = info.progress if isinstance(info.progress, dict) else {}
    if map_node and "items" in record:  # a map node's progress is its items record
        items, added = record.get("items"), record.get("added")
        text += f" forEach: {items} items" if added == items else \
            f" forEach: {added}/{items} items added"
        return text + (f": {first_line(info.error)}" if info.error else "")
    if map_node:
        return text + " forEach" + (f": {first_line(info.error)}" if info.error else "")
    if info.attempt > 1:
        text += f" (attempt {info.attempt})"
    if info.started_ms is not None and info.finished_ms is not None:
        text += f" in {format_duration((info.finished_ms - info.started_ms) / 1000)}"
    if state == "active" and info.progress is not None:
        text += f" progress {short_json(info.progress, 20)}"
    if state == "completed" and info.result is not None:
        text += f" → {short_json(info.result)}" if unicode else f" -> {short_json(info.result)}"
    if info.error and state in {"failed", "ignored", "removed", "cancelled", "delayed",
                                "skipped"}:
        text += f": {first_line(info.error)}"
    return text


def render_tree(
    flow: CompiledFlow | TreeShape,
    infos: Mapping[str, NodeInfo],
    *,
    unicode: bool = True,
    max_lines: int | None = None,
) -> list[str]:
    """The flow as a tree from its roots down to its leaves, one line per node.

    A node with several parents is drawn in full under the first and referred to under
    the others. Long child lists show unfinished children first and summarise the rest.
    The walk is iterative: a 100,000-deep chain draws without recursion.
    """
    shape = TreeShape.of_compiled(flow) if isinstance(flow, CompiledFlow) else flow
    shape = shape.with_items(infos)
    pipe, tee, elbow, blank = (
        ("│  ", "├─ ", "└─ ", "   ") if unicode else ("|  ", "|- ", "`- ", "   ")
    )
    lines: list[str] = []
    drawn: set[str] = set()
    # Stack items: (node name, prefix, is_last, depth) or a ready-made summary line.
    stack: list[tuple[str, str, bool, int] | str] = [
        (root, "", True, 0) for root in reversed(shape.roots)
    ]
    while stack:
        if max_lines is not None and len(lines) >= max_lines:
            lines.append(f"… (tree cut at {max_lines} lines)" if unicode else "... (cut)")
            break
        item = stack.pop()
        if isinstance(item, str):
            lines.append(item)
            continue
        name, prefix, last, depth = item
        node_children = shape.children.get(name, ())
        connector = "" if depth == 0 else (elbow if last else tee)
        line = prefix + connector + describe_node(name, shape.queues.get(name, ""),
                                                  infos.get(name), unicode=unicode,
                                                  map_node=name in shape.maps)
        if name in drawn and node_children:
            lines.append(line + " (children drawn above)")
            continue
        lines.append(line)
        drawn.add(name)
        if depth >= MAX_INDENT_DEPTH:
            child_prefix = prefix  # past this depth the tree stops moving right
        else:
            child_prefix = prefix + ("" if depth == 0 else (blank if last else pipe))
        shown, hidden = _pick_children(list(node_children), infos)
        entries: list[tuple[str, str, bool, int] | str] = [
            (child, child_prefix, i == len(shown) - 1 and not hidden, depth + 1)
            for i, child in enumerate(shown)
        ]
        if hidden:
            counts: dict[str, int] = {}
            for child in hidden:
                info = infos.get(child)
                state = info.state if info is not None else "unknown"
                counts[state] = counts.get(state, 0) + 1
            summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
            more = "…" if unicode else "..."
            entries.append(f"{child_prefix}{elbow}{more} {len(hidden)} more: {summary}")
        stack.extend(reversed(entries))
    return lines


def _pick_children(
    children: list[str], infos: Mapping[str, NodeInfo]
) -> tuple[list[str], list[str]]:
    if len(children) <= MAX_SHOWN_CHILDREN:
        return children, []

    def finished_ok(child: str) -> bool:
        info = infos.get(child)
        return info is not None and info.state == "completed"

    unfinished = [c for c in children if not finished_ok(c)]
    first = unfinished[: MAX_SHOWN_CHILDREN - 1]
    if len(first) < MAX_SHOWN_CHILDREN - 1:
        first += [c for c in children if finished_ok(c)][: MAX_SHOWN_CHILDREN - 1 - len(first)]
    keep = set(first)
    return [c for c in children if c in keep], [c for c in children if c not in keep]


def counts_text(done: int, total: int, counts: Mapping[str, int]) -> str:
    """`3/8 done (3 completed, 1 active)`: the line `kflow run --local` prints too."""
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if n)
    return f"{done}/{total} done ({states})"


def format_duration(seconds: float) -> str:
    """`45s`, `1m30s`, `2h03m`, `3d04h`: the unit a person reads at a glance."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time of the API (`Z` or an offset), or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def flow_duration(summary: Mapping[str, Any], now: datetime) -> str:
    """Start to finish, or start to now while running; `-` before the first node starts."""
    started = parse_time(summary.get("startedAt"))
    if started is None:
        return "-"
    finished = parse_time(summary.get("finishedAt")) or now
    return format_duration((finished - started).total_seconds())


def age(value: str | None, now: datetime) -> str:
    created = parse_time(value)
    return "-" if created is None else format_duration((now - created).total_seconds())


def phase_of(summary: Mapping[str, Any]) -> str:
    phase = str(summary.get("phase") or "Pending")
    if summary.get("suspended") and phase not in TERMINAL_PHASES:
        return f"{phase} (suspended)"
    return phase


def summary_lines(summary: Mapping[str, Any], now: datetime) -> list[str]:
    """The head of `kflow get`: phase, counts, times, duration, then the first failures."""
    ref = f"{summary.get('namespace')}/{summary.get('name')}"
    counts = counts_text(int(summary.get("done") or 0), int(summary.get("total") or 0),
                         summary.get("counts") or {})
    lines = [f"Flow {ref}: {phase_of(summary)} {counts}"]
    times = [f"created {summary.get('createdAt') or '-'}"]
    if summary.get("startedAt"):
        times.append(f"started {summary['startedAt']}")
    if summary.get("finishedAt"):
        times.append(f"finished {summary['finishedAt']}")
    times.append(f"duration {flow_duration(summary, now)}")
    lines.append("  " + ", ".join(times))
    if summary.get("cancelled") and summary.get("phase") not in TERMINAL_PHASES:
        lines.append("  cancel requested")
    made = []
    if summary.get("template"):
        template = summary["template"]
        made.append(f"made from FlowTemplate {template.get('name')} "
                    f"(generation {template.get('generation')})")
    runs = summary.get("runs") or []
    if runs:
        last = runs[-1]
        made.append(f"run of spec generation {summary.get('runGeneration')}; "
                    f"{len(runs)} earlier run{'s' if len(runs) > 1 else ''}, the last "
                    f"(generation {last.get('generation')}) {str(last.get('phase')).lower()}")
    lines.extend(f"  {text}" for text in made)
    lines.extend(exit_handler_lines(summary.get("exitHandlers")))
    failures = summary.get("failures") or []
    if failures:
        handled = summary.get("phase") == "Succeeded"
        lines.append("failures (handled by onFailure):" if handled else "failures:")
        for failure in failures:
            first, *rest = (str(failure.get("error") or "")).strip().splitlines() or [""]
            lines.append(f"  {failure.get('node')} (attempt {failure.get('attempt')}): {first}")
            lines.extend(f"      {line}" for line in rest[:20])
    return lines


def exit_handler_lines(exits: Mapping[str, Any] | None) -> list[str]:
    """The exit handlers (spec.onExit) of `kflow get`: phase, progress, first failures;
    their outcome beside the flow's, never its own."""
    if not exits:
        return []
    lines = [f"  on exit: {exits.get('phase') or 'Pending'} {exits.get('progress') or ''}"
             .rstrip()]
    for failure in exits.get("failures") or []:
        first = (str(failure.get("error") or "").strip().splitlines() or [""])[0]
        lines.append(f"    {failure.get('node')} (attempt {failure.get('attempt')}): {first}")
    return lines


# The DAG as text for other tools: Mermaid (Markdown, GitHub) and Graphviz DOT.


@dataclass(frozen=True)
class GraphNode:
    """One box of a drawn DAG: a node, or a group of folded siblings (`count` > 0)."""

    id: str
    name: str
    queue: str
    state: str | None = None
    count: int = 0


def graph_of_compiled(compiled: CompiledFlow) -> tuple[list[GraphNode], list[tuple[str, str]]]:
    """Every node of a local file, and its edges from child to parent (data flows that way)."""
    nodes = [GraphNode(id=name, name=name, queue=node.queue)
             for name, node in compiled.nodes.items()]
    edges = [(child, name) for name, node in compiled.nodes.items() for child in node.children]
    return nodes, edges


def graph_of_api(body: Mapping[str, Any]) -> tuple[list[GraphNode], list[tuple[str, str]]]:
    """The API's /graph body: nodes (groups folded by the server) and child → parent edges."""
    nodes = []
    for node in body.get("nodes", []):
        group = node.get("group") or {}
        nodes.append(GraphNode(id=str(node["id"]), name=str(node.get("name") or node["id"]),
                               queue=str(node.get("queue") or ""), state=node.get("state"),
                               count=int(group.get("count") or 0)))
    edges = [(str(child), str(parent)) for child, parent in body.get("edges", [])]
    return nodes, edges


def _label(node: GraphNode) -> str:
    text = f"{node.count} x {node.name}" if node.count else node.name
    text += f" [{node.queue}]" if node.queue else ""
    return text + (f" {node.state}" if node.state else "")


def _short_ids(nodes: Iterable[GraphNode]) -> dict[str, str]:
    # Node names may hold any character the Flow allows; the drawn ids are n0, n1, …
    return {node.id: f"n{i}" for i, node in enumerate(nodes)}


_MERMAID_CLASSES = {"completed": "done", "failed": "failed", "active": "active"}


def to_mermaid(nodes: Sequence[GraphNode], edges: Iterable[tuple[str, str]]) -> str:
    """A Mermaid flowchart, leaves at the bottom and edges pointing up to the parents."""
    ids = _short_ids(nodes)
    lines = ["flowchart BT"]
    for node in nodes:
        label = re.sub(r'["<>#]', lambda m: f"#{ord(m.group())};", _label(node))
        open_, close = ("[[", "]]") if node.count else ("[", "]")
        lines.append(f'    {ids[node.id]}{open_}"{label}"{close}')
    lines.extend(f"    {ids[child]} --> {ids[parent]}" for child, parent in edges
                 if child in ids and parent in ids)
    states = {node.state for node in nodes if node.state in _MERMAID_CLASSES}
    if states:
        lines.append("    classDef done fill:#d4f7d4,stroke:#2a2")
        lines.append("    classDef failed fill:#fbd5d5,stroke:#c22")
        lines.append("    classDef active fill:#d5e8fb,stroke:#27c")
        for node in nodes:
            if node.state in _MERMAID_CLASSES:
                lines.append(f"    class {ids[node.id]} {_MERMAID_CLASSES[node.state]}")
    return "\n".join(lines) + "\n"


_DOT_COLOURS = {"completed": "palegreen", "failed": "lightpink", "active": "lightblue"}


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(nodes: Sequence[GraphNode], edges: Iterable[tuple[str, str]],
           name: str = "flow") -> str:
    """A Graphviz digraph, leaves at the bottom and edges pointing up to the parents."""
    ids = _short_ids(nodes)
    lines = [f"digraph {_dot_string(name)} {{", "    rankdir=BT;", "    node [shape=box];"]
    for node in nodes:
        attrs = [f"label={_dot_string(_label(node))}"]
        if node.count:
            attrs.append("shape=box3d")
        if node.state in _DOT_COLOURS:
            attrs.append(f'style=filled fillcolor="{_DOT_COLOURS[node.state]}"')
        lines.append(f"    {ids[node.id]} [{' '.join(attrs)}];")
    lines.extend(f"    {ids[child]} -> {ids[parent]};" for child, parent in edges
                 if child in ids and parent in ids)
    lines.append("}")
    return "\n".join(lines) + "\n"
