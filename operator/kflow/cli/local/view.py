"""How a local run looks: the tree of node states, redrawn on a terminal, line by line elsewhere."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Mapping
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from kflow.api.ids import FlowId
from kflow.cli.render import (
    MARKS_ASCII,
    MARKS_UNICODE,
    TreeShape,
    clip,
    counts_text,
    describe_node,
    render_tree,
    short_json,
)
from kflow.engine import Engine, FlowSnapshot, NodeInfo
from kflow.graph.dag import CompiledFlow

# The tree is drawn by kflow.cli.render, shared with `kflow get` of a cluster flow.
__all__ = ["MARKS_ASCII", "MARKS_UNICODE", "JobLogForwarder", "TreeView", "clip",
           "describe_node", "format_counts", "render_tree", "short_json"]


def _use_unicode(stream: IO[str]) -> bool:
    encoding = (getattr(stream, "encoding", None) or "").lower()
    return "utf" in encoding

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
        heading: str = "Flow",
    ) -> None:
        self.compiled = compiled
        self.flow_label = flow_label
        self.heading = heading  # "Flow", or "On exit of Flow" for the exit handlers' tree
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.redraw = self.stream.isatty() if redraw is None else redraw
        self.unicode = _use_unicode(self.stream)
        self._states: dict[str, str] = {}
        self._last_counts = ""
        self._live: Live | None = None  # the redrawn frame on a terminal, made on first draw
        self._shape: TreeShape | None = None  # the stored graph, once nodes were added

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
            await self.learn_shape(engine, flow_id, snapshot)
            self._redraw(self._frame(snapshot, infos))
            return
        for name in infos if snapshot.total > len(self.compiled.nodes) else self.compiled.nodes:
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
        self.close()  # the live frame goes (it is transient); the final one is printed in full
        for line in frame:
            self._line(line)

    def _frame(
        self, snapshot: FlowSnapshot, infos: Mapping[str, NodeInfo], max_lines: int | None = None
    ) -> list[str]:
        if max_lines is None and self.redraw:
            rows = shutil.get_terminal_size((100, 40)).lines
            max_lines = max(rows - 3, 5)
        header = f"{self.heading} {self.flow_label}: {snapshot.phase} {format_counts(snapshot)}"
        shape = self._shape or TreeShape.of_compiled(self.compiled)
        return [header, *render_tree(shape, infos, unicode=self.unicode, max_lines=max_lines)]

    async def learn_shape(self, engine: Engine, flow_id: FlowId, snapshot: FlowSnapshot
                          ) -> None:
        """Read the graph as the store has it once nodes were added while the flow ran
        (job.add_children), so the tree shows them under their parents (a forEach's items
        need no read: they are drawn from their names)."""
        if len(self.compiled.nodes) < snapshot.total <= self.LIVE_NODE_LIMIT * 10:
            maps = frozenset(n.name for n in self.compiled.nodes.values()
                             if n.for_each is not None)
            self._shape = TreeShape.of_nodes(await engine.graph_nodes(flow_id), maps)

    def _redraw(self, lines: list[str]) -> None:
        width = shutil.get_terminal_size((100, 40)).columns
        frame = Text("\n".join(line[: width - 1] for line in lines), no_wrap=True)
        if self._live is None:
            # The caller said this stream is a terminal (redraw): Rich draws it as one.
            console = Console(file=self.stream, force_terminal=True, highlight=False,
                              width=width)
            self._live = Live(frame, console=console, auto_refresh=False, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start(refresh=True)
        else:
            self._live.update(frame, refresh=True)

    def close(self) -> None:
        """Take the live frame off the terminal (and give the cursor back)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def message(self, text: str) -> None:
        """A line of its own, outside the tree (not shown with --quiet by the caller)."""
        self._line(text)

    def _line(self, text: str) -> None:
        if self._live is not None:  # above the live frame, which is drawn again below it
            self._live.console.print(text, markup=False, highlight=False, soft_wrap=True)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

def format_counts(snapshot: FlowSnapshot) -> str:
    return counts_text(snapshot.done, snapshot.total, snapshot.counts)

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
