"""How a local run looks: the tree of node states, redrawn on a terminal, line by line elsewhere."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Mapping
from typing import IO, Any

from kflow.api.ids import FlowId
from kflow.engine import Engine, FlowSnapshot, NodeInfo
from kflow.graph.dag import CompiledFlow


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


_MARKS_UNICODE = {
    "completed": "✔", "failed": "✘", "active": "▶", "ready": "○", "waiting-children": "◌",
    "delayed": "◷", "ignored": "⊘", "removed": "⊖", "cancelled": "⊗",
}
_MARKS_ASCII = {
    "completed": "+", "failed": "x", "active": ">", "ready": "o", "waiting-children": ".",
    "delayed": "~", "ignored": "-", "removed": "-", "cancelled": "/",
}
MAX_SHOWN_CHILDREN = 12
MAX_INDENT_DEPTH = 24


def _use_unicode(stream: IO[str]) -> bool:
    encoding = (getattr(stream, "encoding", None) or "").lower()
    return "utf" in encoding


def describe_node(
    name: str, queue: str, info: NodeInfo | None, *, unicode: bool = True
) -> str:
    """One line of the tree: mark, name, queue, state and what matters in that state."""
    state = info.state if info is not None else "unknown"
    marks = _MARKS_UNICODE if unicode else _MARKS_ASCII
    text = f"{marks.get(state, '?')} {name} [{queue}] {state}"
    if info is None:
        return text
    if info.attempt > 1:
        text += f" (attempt {info.attempt})"
    if state == "active" and info.progress is not None:
        text += f" progress {short_json(info.progress, 20)}"
    if state == "completed":
        text += f" → {short_json(info.result)}" if unicode else f" -> {short_json(info.result)}"
    if info.error and state in {"failed", "ignored", "removed", "cancelled", "delayed"}:
        first = info.error.strip().splitlines()[0] if info.error.strip() else ""
        text += f": {first[:160]}"
    return text


def render_tree(
    compiled: CompiledFlow,
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
    pipe, tee, elbow, blank = (
        ("│  ", "├─ ", "└─ ", "   ") if unicode else ("|  ", "|- ", "`- ", "   ")
    )
    lines: list[str] = []
    drawn: set[str] = set()
    # Stack items: (node name, prefix, is_last, depth) or a ready-made summary line.
    stack: list[tuple[str, str, bool, int] | str] = [
        (root, "", True, 0) for root in reversed(compiled.roots)
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
        node = compiled.nodes[name]
        connector = "" if depth == 0 else (elbow if last else tee)
        line = prefix + connector + describe_node(name, node.queue, infos.get(name),
                                                  unicode=unicode)
        if name in drawn and node.children:
            lines.append(line + " (children drawn above)")
            continue
        lines.append(line)
        drawn.add(name)
        if depth >= MAX_INDENT_DEPTH:
            child_prefix = prefix  # past this depth the tree stops moving right
        else:
            child_prefix = prefix + ("" if depth == 0 else (blank if last else pipe))
        children = list(node.children)
        shown, hidden = _pick_children(children, infos)
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


class TreeView:
    """Shows a local run: a redrawn tree on a terminal, state changes line by line otherwise."""

    # Past this many nodes the live view shows counts only (reading every node is too slow).
    LIVE_NODE_LIMIT = 2_000

    def __init__(
        self,
        compiled: CompiledFlow,
        flow_label: str,
        *,
        stream: IO[str] | None = None,
        quiet: bool = False,
        redraw: bool | None = None,
    ) -> None:
        self.compiled = compiled
        self.flow_label = flow_label
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.redraw = self.stream.isatty() if redraw is None else redraw
        self.unicode = _use_unicode(self.stream)
        self._states: dict[str, str] = {}
        self._drawn_lines = 0
        self._last_counts = ""

    # Runner events arrive as they happen; polls fill in the engine's own transitions.
    def node_event(self, node: str, state: str, detail: str) -> None:
        if self._states.get(node) == state and state != "delayed":
            return
        self._states[node] = state
        if state == "completed":
            detail = clip(detail)  # the result as compact JSON
        if not self.quiet and not self.redraw:
            self._line(f"{node}: {state}" + (f" ({detail})" if detail else ""))

    def job_log(self, node: str, message: str) -> None:
        if not self.quiet and not self.redraw:
            self._line(f"{node}: log: {message}")

    async def poll(self, engine: Engine, flow_id: FlowId, snapshot: FlowSnapshot) -> None:
        if self.quiet:
            return
        if snapshot.total > self.LIVE_NODE_LIMIT:
            counts = format_counts(snapshot)
            if counts != self._last_counts:
                self._last_counts = counts
                self._line(f"{self.flow_label}: {snapshot.phase} {counts}")
            return
        infos = await engine.node_infos(flow_id)
        if self.redraw:
            self._redraw(self._frame(snapshot, infos))
            return
        for name in self.compiled.nodes:
            info = infos.get(name)
            if info is not None and self._states.get(name) != info.state:
                self.node_event(name, info.state, _detail(info))

    def final(self, snapshot: FlowSnapshot, infos: Mapping[str, NodeInfo]) -> None:
        frame = self._frame(snapshot, infos, max_lines=400)
        if snapshot.failures:
            handled = snapshot.phase == "Succeeded"
            frame.append("failures (handled by onFailure):" if handled else "failures:")
            for failure in snapshot.failures:
                first, *rest = failure.error.strip().splitlines() or [""]
                frame.append(f"  {failure.node} (attempt {failure.attempt}): {first}")
                frame.extend(f"      {line}" for line in rest)
        if self.redraw and self._drawn_lines:  # replace the live frame, then print in full
            self.stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")
            self._drawn_lines = 0
        for line in frame:
            self._line(line)

    def _frame(
        self, snapshot: FlowSnapshot, infos: Mapping[str, NodeInfo], max_lines: int | None = None
    ) -> list[str]:
        if max_lines is None and self.redraw:
            rows = shutil.get_terminal_size((100, 40)).lines
            max_lines = max(rows - 3, 5)
        header = f"Flow {self.flow_label}: {snapshot.phase} {format_counts(snapshot)}"
        return [header, *render_tree(self.compiled, infos, unicode=self.unicode,
                                     max_lines=max_lines)]

    def _redraw(self, lines: list[str]) -> None:
        width = shutil.get_terminal_size((100, 40)).columns
        out = []
        if self._drawn_lines:
            out.append(f"\x1b[{self._drawn_lines}F\x1b[J")
        out.extend(line[: width - 1] + "\n" for line in lines)
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn_lines = len(lines)

    def message(self, text: str) -> None:
        """A line of its own, outside the tree (not shown with --quiet by the caller)."""
        self._line(text)

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def format_counts(snapshot: FlowSnapshot) -> str:
    states = ", ".join(f"{n} {s}" for s, n in sorted(snapshot.counts.items()) if n)
    return f"{snapshot.done}/{snapshot.total} done ({states})"


def _detail(info: NodeInfo) -> str:
    if info.state == "completed":
        return short_json(info.result)
    if info.error:
        return info.error.strip().splitlines()[0][:160] if info.error.strip() else ""
    return ""


class JobLogForwarder(logging.Handler):
    """Sends job.log lines of the flow being run to the view."""

    def __init__(self, view: TreeView) -> None:
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        node = getattr(record, "node", None)
        if node is not None:
            self.view.job_log(str(node), record.getMessage())
