"""The API's JSON shapes (docs/API.md): flow summaries, node rows and details, from the Flow
objects and the engine's reads. Pure functions: no I/O here."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kflow.api.models import NodeCounts
from kflow.api.states import TERMINAL_PHASES, FlowPhase, NodeState
from kflow.engine import TERMINAL_STATES, FlowSnapshot, NodeDetail, NodeRow
from kflow.graph.fold import FoldedGraph

GLOB_SPECIALS = "\\*?[]"
FAILURES_SHOWN = 10  # first failures a flow's detail lists (the status keeps as many)
# Parents, children and their errors a node's detail lists (its `counts` give the totals): the
# root of a 100,000-node fan-out answers in a few KiB, not with every child's name.
EDGES_SHOWN = 1000


def rfc3339_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def name_glob(substring: str | None) -> str | None:
    """The HSCAN MATCH pattern for node names containing `substring` (None: every name)."""
    if not substring:
        return None
    escaped = "".join("\\" + c if c in GLOB_SPECIALS else c for c in substring)
    return f"*{escaped}*"


def first_line(text: str | None) -> str | None:
    return None if text is None else text.strip().split("\n", 1)[0]


def _status_counts(status: Mapping[str, Any]) -> dict[str, int]:
    """The status's counts (camelCase fields) keyed by node state, zeros left out."""
    counts = NodeCounts.model_validate(status.get("counts") or {}).model_dump()
    return {name.replace("_", "-"): n for name, n in counts.items() if n}


def flow_summary(flow: Mapping[str, Any], snapshot: FlowSnapshot | None = None
                 ) -> dict[str, Any]:
    """A FlowSummary: from the Flow's status, or live from Redis when `snapshot` is given."""
    meta = flow.get("metadata") or {}
    spec = flow.get("spec") or {}
    status = flow.get("status") or {}
    if snapshot is not None:
        phase: str | None = snapshot.phase
        total, counts = snapshot.total, {s: n for s, n in snapshot.counts.items() if n}
        done = snapshot.done
        started, finished = rfc3339_ms(snapshot.started_at_ms), rfc3339_ms(
            snapshot.finished_at_ms)
    else:
        phase = status.get("phase")
        counts = _status_counts(status)
        total = int(status.get("total") or 0)
        done = sum(n for s, n in counts.items() if s in TERMINAL_STATES)
        started, finished = status.get("startedAt"), status.get("finishedAt")
    return {
        "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
        "phase": phase or "Pending", "total": total, "done": done, "counts": counts,
        "createdAt": meta.get("creationTimestamp"), "startedAt": started,
        "finishedAt": finished, "suspended": bool(spec.get("suspend")),
        "cancelled": bool(spec.get("cancel")),
    }


def flow_roots_and_queues(spec: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The root nodes (top-level nodes no node lists as a child) and the queues of a Flow's
    spec, read without compiling it."""
    queues: set[str] = set()
    referenced: set[str] = set()

    def walk(nodes: Iterable[Any], top: bool) -> None:
        for node in nodes:
            if isinstance(node, str):
                referenced.add(node)
                continue
            if not isinstance(node, Mapping):
                continue
            if node.get("queue"):
                queues.add(str(node["queue"]))
            if not top and node.get("name"):
                referenced.add(str(node["name"]))
            walk(node.get("children") or (), False)

    top_nodes = list(spec.get("nodes") or ())
    walk(top_nodes, True)
    roots = [str(n["name"]) for n in top_nodes
             if isinstance(n, Mapping) and n.get("name") and n["name"] not in referenced]
    return roots, sorted(queues)


def flow_detail(flow: Mapping[str, Any], snapshot: FlowSnapshot | None) -> dict[str, Any]:
    status = flow.get("status") or {}
    out = flow_summary(flow, snapshot)
    if snapshot is not None:
        failures = [{"node": f.node, "error": f.error, "attempt": max(1, f.attempt)}
                    for f in snapshot.failures[:FAILURES_SHOWN]]
    else:
        failures = list(status.get("firstFailures") or [])
    # A Flow made from a FlowTemplate runs the nodes pinned in its status.
    pinned = (status.get("template") or {}).get("spec")
    roots, queues = flow_roots_and_queues(pinned or flow.get("spec") or {})
    template = status.get("template") or {}
    out.update(failures=failures, conditions=list(status.get("conditions") or []),
               queues=queues, roots=roots,
               template={"name": template.get("name"), "generation": template.get(
                   "generation")} if template.get("name") else None,
               runGeneration=status.get("runGeneration"), runs=list(status.get("runs") or []),
               exitHandlers=status.get("exitHandlers"))
    return out


def is_terminal(phase: str | None) -> bool:
    return phase is not None and phase in TERMINAL_PHASES


def can_retry(phase: str | None, conditions: Iterable[Mapping[str, Any]]) -> bool:
    """A Failed flow retries its failed nodes; one whose state was lost starts over."""
    lost = any(c.get("type") == "StateLost" and c.get("status") == "True" for c in conditions)
    return phase == FlowPhase.FAILED or lost


def node_summary(row: NodeRow) -> dict[str, Any]:
    return {"name": row.name, "queue": row.queue, "state": str(row.state),
            "attempt": row.attempt, "error": first_line(row.error), "progress": row.progress,
            "result": row.result,
            "startedAt": rfc3339_ms(row.started_ms), "finishedAt": rfc3339_ms(row.finished_ms)}


def node_event(row: NodeRow) -> dict[str, Any]:
    return {"name": row.name, "state": str(row.state), "attempt": row.attempt,
            "error": first_line(row.error)}


def stream_time(entry_id: str) -> str | None:
    """The time a Redis stream id (`<ms>-<seq>`) was written, RFC 3339."""
    ms, _, _ = entry_id.partition("-")
    return rfc3339_ms(int(ms)) if ms.isdigit() else None


def node_detail(detail: NodeDetail) -> dict[str, Any]:
    out = node_summary(detail.row)
    out.update(
        error=detail.row.error, inputs=detail.data, result=detail.result,
        ignoredFailures=_first(detail.ignored_failures, EDGES_SHOWN),
        failedChildren=_first(detail.failed_children, EDGES_SHOWN),
        parents=detail.parents[:EDGES_SHOWN], children=detail.children[:EDGES_SHOWN],
        counts={"parents": len(detail.parents), "children": len(detail.children),
                "ignoredFailures": len(detail.ignored_failures),
                "failedChildren": len(detail.failed_children)},
        attempts=[{"attempt": a, "log": text} for a, text in detail.attempt_logs],
        logs=[{"time": stream_time(line.get("id", "")), "attempt": _int(line.get("attempt")),
               "message": line.get("msg", "")} for line in detail.logs])
    return out


def _first(items: Mapping[str, str], n: int) -> dict[str, str]:
    return dict(itertools.islice(items.items(), n))


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def log_text(lines: Iterable[Mapping[str, str]], attempt_logs: Iterable[tuple[int, str]] = (),
             *, prefixed: bool) -> str:
    """The logs endpoint's text: kept container log tails, then job.log() lines."""
    out: list[str] = []
    for attempt, text in attempt_logs:
        out.extend(f"[{attempt}] {line}" for line in text.splitlines())
    for line in lines:
        head = f"{line.get('node', '')}[{line.get('attempt', '')}] " if prefixed else \
            f"[{line.get('attempt', '')}] "
        out.append(head + line.get("msg", ""))
    return "\n".join(out) + ("\n" if out else "")


def graph_json(graph: FoldedGraph) -> dict[str, Any]:
    return {
        "nodes": [{"id": n.id, "name": n.name, "queue": n.queue, "state": n.state,
                   "group": None if n.group is None else {
                       "count": n.group.count, "counts": n.group.counts,
                       "members": n.group.members}} for n in graph.nodes],
        "edges": [list(e) for e in graph.edges],
    }


def parse_state(value: str | None) -> NodeState | None:
    """The `state` query parameter; ValueError naming the states when it is none of them."""
    if not value:
        return None
    try:
        return NodeState.parse(value)
    except ValueError:
        raise ValueError(f"state={value!r} is not a node state; use one of "
                         f"{', '.join(NodeState)}") from None
