"""The cluster commands' work (get, list, watch, wait, logs, actions, submit, graph): what
they ask the kflow API or the Kubernetes API, and what they print."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kflow.api.models import GROUP, VERSION
from kflow.api.states import TERMINAL_PHASES
from kflow.cli.client import (
    EXIT_FLOW_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ApiError,
    CliError,
    Connection,
    KflowApi,
)
from kflow.cli.render import (
    MARKS_ASCII,
    MARKS_UNICODE,
    PHASE_STYLES,
    STATE_STYLES,
    TreeShape,
    age,
    counts_text,
    first_line,
    flow_duration,
    node_info_of,
    phase_of,
    render_tree,
    summary_lines,
)
from kflow.engine import NodeInfo

# Up to this many nodes `get` and `watch` draw the whole tree; past it, the summary and the
# nodes that need a look (a page each), never every node.
TREE_NODE_LIMIT = 2_000
# How many nodes of each unfinished state `get` lists for a flow past TREE_NODE_LIMIT.
SHOWN_PER_STATE = 20
# Pages of the node list read per state for that list (each page is one HSCAN step).
PAGES_PER_STATE = 5
PAGE_SIZE = 5_000
LIVE_REFRESH_PER_SECOND = 4
RECONNECT_PAUSE_S = 1.0

PLURALS = {"Flow": "flows", "Queue": "queues", "FlowTemplate": "flowtemplates",
           "CronFlow": "cronflows"}
# What a Flow of the same file may need, created first; one that exists is left as it is.
SHARED_KINDS = ("Queue", "FlowTemplate")


def now() -> datetime:
    return datetime.now(UTC)


def emit(data: Any, output: str, out: IO[str]) -> None:
    """`-o json` or `-o yaml`: the API's own objects, for scripts."""
    if output == "json":
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        import yaml

        out.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def styled_tree_line(line: str, unicode: bool) -> Text:
    """A tree line with its node coloured by state (the mark after the branches says which)."""
    marks = MARKS_UNICODE if unicode else MARKS_ASCII
    text = Text(line)
    for position, char in enumerate(line):
        if char in marks.values() or char == "?":
            state = next((s for s, m in marks.items() if m == char), "")
            text.stylize(STATE_STYLES.get(state, ""), position)
            break
    return text


def styled_summary(summary: Mapping[str, Any]) -> list[Text]:
    lines = [Text(line) for line in summary_lines(summary, now())]
    phase = str(summary.get("phase") or "")
    head = lines[0]
    start = head.plain.find(f": {phase}")
    if phase and start >= 0:
        head.stylize(PHASE_STYLES.get(phase, "bold"), start + 2, start + 2 + len(phase))
    return lines


@dataclass
class FlowView:
    """What `get` and `watch` show of one flow: its summary, and its nodes when it is small."""

    summary: dict[str, Any]
    shape: TreeShape | None = None
    infos: dict[str, NodeInfo] | None = None
    attention: list[dict[str, Any]] | None = None  # a large flow's unfinished nodes

    def renderable(self, unicode: bool, max_lines: int | None = None) -> Group:
        parts: list[Any] = list(styled_summary(self.summary))
        if self.shape is not None and self.infos is not None:
            parts.extend(styled_tree_line(line, unicode)
                         for line in render_tree(self.shape, self.infos, unicode=unicode,
                                                 max_lines=max_lines))
        elif self.attention is not None:
            parts.append(Text(f"{self.summary.get('total')} nodes, more than the "
                              f"{TREE_NODE_LIMIT:,} drawn as a tree: the active and delayed "
                              "ones (`kflow get FLOW --state STATE` lists any state)"))
            parts.append(node_table(self.attention) if self.attention else Text("  none"))
        return Group(*parts)


def node_table(nodes: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NODE", "QUEUE", "STATE", "ATTEMPT", "ERROR"):
        table.add_column(column, overflow="fold")
    for node in nodes:
        state = str(node.get("state") or "")
        table.add_row(str(node.get("name")), str(node.get("queue") or ""),
                      Text(state, style=STATE_STYLES.get(state, "")),
                      str(node.get("attempt") or ""), first_line(node.get("error"), 120))
    return table


def node_detail(detail: Mapping[str, Any], flow_ref: str) -> Group:
    """`kflow get FLOW NODE`: the node's state, place in the DAG, data, result and errors."""
    state = str(detail.get("state") or "unknown")
    head = Text(f"Node {flow_ref}/{detail.get('name')} [{detail.get('queue')}]: ")
    head.append(state, style=STATE_STYLES.get(state, "bold"))
    if int(detail.get("attempt") or 0) > 0:
        head.append(f" (attempt {detail.get('attempt')})")
    parts: list[Any] = [head]

    def names(key: str) -> None:
        parts.append(Text(f"  {key}: {', '.join(detail.get(key) or []) or '-'}"))

    def block(title: str, value: Any) -> None:
        if value is None or value == {} or value == "":
            return
        text = value if isinstance(value, str) else json.dumps(value, indent=2,
                                                               ensure_ascii=False)
        parts.append(Text(f"{title}:", style="bold"))
        parts.append(Text("\n".join(f"  {line}" for line in clip_lines(text))))

    names("parents")
    names("children")
    if detail.get("progress") is not None:
        parts.append(Text(f"  progress: {json.dumps(detail['progress'])}"))
    block("inputs", detail.get("inputs"))
    block("result", detail.get("result"))
    block("error", detail.get("error"))
    block("ignored failures", detail.get("ignoredFailures"))
    block("failed children", detail.get("failedChildren"))
    attempts = [str(a.get("attempt")) for a in detail.get("attempts") or []]
    if attempts or detail.get("logs"):
        parts.append(Text(f"logs: attempts {', '.join(attempts) or '-'} kept, "
                          f"{len(detail.get('logs') or [])} job.log lines "
                          "(`kflow logs FLOW NODE`)"))
    return Group(*parts)


def clip_lines(text: str, limit: int = 60) -> list[str]:
    lines = text.splitlines() or [""]
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"… {len(lines) - limit} more lines (-o json shows all)"]


def nodes_in_state(api: KflowApi, namespace: str, name: str, state: str,
                   at_most: int, pages: int = PAGES_PER_STATE) -> list[dict[str, Any]]:
    """Up to `at_most` nodes in `state`, reading at most `pages` pages."""
    found: list[dict[str, Any]] = []
    cont: str | None = None
    for _ in range(pages):
        page = api.nodes(namespace, name, state=state, limit=PAGE_SIZE, cont=cont)
        found.extend(page.get("items") or [])
        cont = page.get("continue")
        if len(found) >= at_most or not cont:
            break
    return found[:at_most]


def load_view(api: KflowApi, namespace: str, name: str, *,
              summary: dict[str, Any] | None = None,
              tree_limit: int = TREE_NODE_LIMIT) -> FlowView:
    summary = summary if summary is not None else api.flow(namespace, name)
    total = int(summary.get("total") or 0)
    if 0 < total <= tree_limit:
        shape = TreeShape.of_graph(api.graph(namespace, name, collapse=0))
        nodes = api.all_nodes(namespace, name)  # each with its result (docs/API.md)
        return FlowView(summary, shape, {n["name"]: node_info_of(n) for n in nodes})
    if total == 0:
        return FlowView(summary)
    counts: Mapping[str, int] = summary.get("counts") or {}
    attention: list[dict[str, Any]] = []
    # Ready nodes only wait for a worker: their count in the summary says enough.
    for state in ("active", "delayed"):
        if counts.get(state):
            attention += nodes_in_state(api, namespace, name, state, SHOWN_PER_STATE)
    return FlowView(summary, attention=attention)


def nodes_listing(api: KflowApi, namespace: str, name: str, state: str | None,
                  at_most: int) -> list[dict[str, Any]]:
    if state is None:
        return api.all_nodes(namespace, name, at_most=at_most)
    return nodes_in_state(api, namespace, name, state, at_most, pages=1_000)


def print_get(console: Console, view: FlowView) -> None:
    console.print(view.renderable(unicode=_unicode(console)), soft_wrap=True)


def _unicode(console: Console) -> bool:
    return "utf" in (console.encoding or "").lower()


def flows_table(items: Sequence[Mapping[str, Any]], all_namespaces: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["NAME", "PHASE", "DONE", "FAILED", "AGE", "DURATION"]
    if all_namespaces:
        columns.insert(0, "NAMESPACE")
    for column in columns:
        table.add_column(column, no_wrap=True)
    moment = now()
    for flow in items:
        counts = flow.get("counts") or {}
        phase = str(flow.get("phase") or "Pending")
        row: list[str | Text] = [
            str(flow.get("name")),
            Text(phase_of(flow), style=PHASE_STYLES.get(phase, "")),
            f"{flow.get('done') or 0}/{flow.get('total') or 0}",
            str(counts.get("failed") or 0),
            age(flow.get("createdAt"), moment),
            flow_duration(flow, moment),
        ]
        if all_namespaces:
            row.insert(0, str(flow.get("namespace")))
        table.add_row(*row)
    return table


def list_flows(api: KflowApi, namespace: str, *, phase: str | None, q: str | None,
               at_most: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cont: str | None = None
    while len(items) < at_most:
        page = api.list_flows(namespace, phase=phase, q=q, limit=min(at_most - len(items), 500),
                              cont=cont)
        items.extend(page.get("items") or [])
        cont = page.get("continue")
        if not cont:
            break
    return items[:at_most]


def list_all_namespaces(connection: Connection, *, phase: str | None, q: str | None,
                        at_most: int) -> list[dict[str, Any]]:
    """`list -A`: the Flows of every namespace from the Kubernetes API with your own
    credentials (it needs `list` on flows cluster-wide), as FlowSummary-shaped items made
    from the status the operator keeps."""
    from kubernetes.client import ApiClient, CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    client = CustomObjectsApi(ApiClient(configuration=connection.configuration))
    items: list[dict[str, Any]] = []
    cont: str | None = None
    while len(items) < at_most:
        try:
            page = cast(dict[str, Any], client.list_cluster_custom_object(
                GROUP, VERSION, "flows", limit=min(500, at_most), _continue=cont or None))
        except ApiException as exc:
            raise kube_api_error(exc, "cannot list flows in all namespaces") from None
        except Exception as exc:  # urllib3 errors: the API server is unreachable
            raise CliError(f"cannot list flows in all namespaces: {exc}") from None
        for flow in page.get("items") or []:
            summary = summary_of_flow(flow)
            if (phase is None or summary["phase"] == phase) and (
                    not q or q in str(summary["name"])):
                items.append(summary)
        cont = (page.get("metadata") or {}).get("continue")
        if not cont:
            break
    return items[:at_most]


def summary_of_flow(flow: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec = flow.get("metadata") or {}, flow.get("spec") or {}
    status = flow.get("status") or {}
    done = str(status.get("progress") or "0/0").partition("/")[0]
    return {"name": meta.get("name"), "namespace": meta.get("namespace"),
            "uid": meta.get("uid"), "phase": status.get("phase") or "Pending",
            "total": status.get("total") or 0, "done": int(done) if done.isdigit() else 0,
            "counts": status.get("counts") or {}, "createdAt": meta.get("creationTimestamp"),
            "startedAt": status.get("startedAt"), "finishedAt": status.get("finishedAt"),
            "suspended": bool(spec.get("suspend")), "cancelled": bool(spec.get("cancel"))}


def phase_exit(phase: str | None) -> int:
    return EXIT_OK if phase == "Succeeded" else EXIT_FLOW_FAILED


def wait_for(api: KflowApi, namespace: str, name: str, *, target: str | None,
             timeout: float | None, interval: float = 1.0) -> tuple[int, dict[str, Any]]:
    """Poll the flow's summary (O(1) on the server) until it reaches `target` (any terminal
    phase when None). Exit code: 0 reached (Succeeded when no target), 1 ended otherwise,
    6 out of time."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        summary = api.flow(namespace, name)
        phase = summary.get("phase")
        if target is not None and phase == target:
            return EXIT_OK, summary
        if phase in TERMINAL_PHASES:
            return (phase_exit(phase) if target is None else EXIT_FLOW_FAILED), summary
        if deadline is not None and time.monotonic() >= deadline:
            return EXIT_TIMEOUT, summary
        time.sleep(interval if deadline is None
                   else max(min(interval, deadline - time.monotonic()), 0.05))


def failure_marks(summary: Mapping[str, Any]) -> list[tuple[str, int]]:
    return [(str(f.get("node")), int(f.get("attempt") or 0))
            for f in summary.get("failures") or []]


def wait_for_retry(api: KflowApi, namespace: str, name: str, before: Mapping[str, Any], *,
                   timeout: float | None, interval: float = 1.0) -> tuple[int, dict[str, Any]]:
    """After a retry: the flow still says Failed until the operator acts on it, so first wait
    for it to run again (or to fail anew: later attempts in its failures), then to end."""
    deadline = None if timeout is None else time.monotonic() + timeout
    old = failure_marks(before)
    while True:
        summary = api.flow(namespace, name)
        if summary.get("phase") not in TERMINAL_PHASES or failure_marks(summary) != old:
            break
        if deadline is not None and time.monotonic() >= deadline:
            return EXIT_TIMEOUT, summary
        time.sleep(interval)
    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    return wait_for(api, namespace, name, target=None, timeout=left, interval=interval)


def watch(api: KflowApi, console: Console, namespace: str, name: str) -> int:
    """Redraw the flow from its event stream until it ends; on a terminal a live tree, else
    one line per change. Exit 0 when it succeeds, 1 when it fails or is cancelled."""
    view = load_view(api, namespace, name)
    unicode = _unicode(console)
    last_id: str | None = None

    def frame() -> Group:
        rows = console.size.height - 5 if console.is_terminal else None
        return view.renderable(unicode, max_lines=max(rows or 0, 5) if rows else None)

    def on_event(kind: str, data: Any, live: Live | None) -> None:
        if kind == "flow" and isinstance(data, dict):
            if live is None and data.get("phase") != view.summary.get("phase"):
                counts = counts_text(int(data.get("done") or 0), int(data.get("total") or 0),
                                     data.get("counts") or {})
                console.print(f"Flow {namespace}/{name}: {phase_of(data)} {counts}",
                              soft_wrap=True, highlight=False, markup=False)
            view.summary.update(data)
        elif kind == "node" and isinstance(data, dict) and data.get("name"):
            node = str(data["name"])
            if view.infos is not None:
                old = view.infos.get(node)
                view.infos[node] = NodeInfo(
                    state=data.get("state") or "unknown",  # type: ignore[arg-type]
                    attempt=int(data.get("attempt") or (old.attempt if old else 0)),
                    result=old.result if old else None, error=data.get("error"),
                    progress=old.progress if old else None)
            if live is None:
                error = first_line(data.get("error"))
                console.print(f"{node}: {data.get('state')}" + (f" ({error})" if error else ""),
                              soft_wrap=True, highlight=False, markup=False)

    def follow(live: Live | None) -> None:
        nonlocal last_id, view
        while view.summary.get("phase") not in TERMINAL_PHASES:
            if view.shape is None and view.attention is None and view.summary.get("total"):
                view = load_view(api, namespace, name, summary=view.summary)  # recorded now
            last_drawn = 0.0
            ended = False
            try:
                for event in api.events(namespace, name, last_event_id=last_id):
                    last_id = event.id or last_id
                    if event.name == "end":
                        ended = True
                        break
                    on_event(event.name, event.data, live)
                    if live is not None and \
                            time.monotonic() - last_drawn > 1 / LIVE_REFRESH_PER_SECOND:
                        live.update(frame())
                        last_drawn = time.monotonic()
            except ApiError as exc:
                # A Flow the operator has not recorded in Redis yet has no events to follow.
                if exc.status != 404:
                    raise
            view.summary.update(api.flow(namespace, name))  # a deleted Flow ends it here (404)
            if live is not None:
                live.update(frame())
            if ended:
                break
            time.sleep(RECONNECT_PAUSE_S)  # the stream closed early: ask again, not in a spin

    if console.is_terminal:
        with Live(frame(), console=console, refresh_per_second=LIVE_REFRESH_PER_SECOND,
                  transient=True) as live:
            follow(live)
    else:
        console.print(f"Flow {namespace}/{name}: {phase_of(view.summary)}", soft_wrap=True)
        follow(None)
    final = load_view(api, namespace, name)
    print_get(console, final)
    return phase_exit(final.summary.get("phase"))


def follow_logs(api: KflowApi, out: IO[str], namespace: str, name: str, *,
                node: str | None, attempt: int | None, follow: bool,
                interval: float = 2.0) -> int:
    """Print the kept logs; with `follow`, new lines as they come until the flow ends."""
    printed: list[str] = []
    while True:
        summary = api.flow(namespace, name) if follow else None
        lines = api.logs(namespace, name, node=node, attempt=attempt).splitlines()
        out.write("".join(f"{line}\n" for line in new_lines(printed, lines)))
        out.flush()
        printed = lines
        if not follow or (summary or {}).get("phase") in TERMINAL_PHASES:
            return EXIT_OK
        time.sleep(interval)


def new_lines(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """The lines of `after` not yet printed, given the kept tail `before` printed last time
    (the tail may have lost lines at its start as it grew)."""
    if not before:
        return list(after)
    for start in range(len(before)):
        overlap = len(before) - start
        if list(after[:overlap]) == list(before[start:]):
            return list(after[overlap:])
    return list(after)


ACTION_WORDS = {
    "retry": "retry of its failed nodes requested",
    "cancel": "cancel requested",
    "suspend": "suspended",
    "resume": "resumed",
}


def kube_api_error(exc: Any, what: str) -> CliError:
    """A Kubernetes API error (kubernetes.client.ApiException) as one line and exit code."""
    try:
        message = str(json.loads(exc.body).get("message"))
    except (TypeError, ValueError, AttributeError):
        message = str(exc.reason)
    return ApiError(int(exc.status or 0), str(exc.reason or ""), f"{what}: {message}")


def create_objects(connection: Connection, manifests: Sequence[dict[str, Any]],
                   namespace: str, explicit_namespace: bool,
                   say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Create each object with the caller's own credentials (so RBAC is the API server's):
    Queues and FlowTemplates first (one that exists is left as it is), then Flows and
    CronFlows. Returns the created Flows."""
    from kubernetes.client import ApiClient, CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    client = CustomObjectsApi(ApiClient(configuration=connection.configuration))
    created: list[dict[str, Any]] = []
    ordered = sorted(manifests, key=lambda m: m.get("kind") not in SHARED_KINDS)
    for manifest in ordered:
        kind = str(manifest.get("kind"))
        meta = manifest.setdefault("metadata", {})
        own = meta.get("namespace")
        if own and explicit_namespace and own != namespace:
            raise CliError(f"{kind} {own}/{meta.get('name') or meta.get('generateName')}: the "
                           f"file says namespace {own}, and -n says {namespace}; drop one",
                           EXIT_USAGE)
        target = own or namespace
        meta["namespace"] = target
        label = f"{kind} {target}/{meta.get('name') or meta.get('generateName') + '…'}"
        try:
            body = cast(dict[str, Any], client.create_namespaced_custom_object(
                GROUP, VERSION, target, PLURALS[kind], manifest))
        except ApiException as exc:
            if exc.status == 409 and kind in SHARED_KINDS:
                say(f"{label} exists, left as it is")
                continue
            raise kube_api_error(exc, f"cannot create {label}") from None
        except Exception as exc:  # urllib3 errors: the API server is unreachable
            raise CliError(f"cannot create {label}: {exc}") from None
        name = body["metadata"]["name"]
        say(f"{kind} {target}/{name} created")
        if kind == "Flow":
            created.append(body)
    return created


def graph_of_file(path: str, stdin: IO[str] | None = None) -> tuple[str, Any]:
    """(flow reference, compiled flow) of the single Flow in a local file."""
    from kflow.api import Flow
    from kflow.api.errors import SpecError, error_lines
    from kflow.api.manifests import document_source, read_documents
    from kflow.graph import check_manifest

    try:
        if path == "-":
            documents, name = read_documents((stdin or sys.stdin).read() + "\n")
        else:
            documents, name = read_documents(Path(path))
        flows = []
        for position, document in enumerate(documents, start=1):
            verdict = check_manifest(document, source=document_source(name, position))
            if isinstance(verdict.obj, Flow) and verdict.compiled is not None:
                flows.append((verdict.obj.object_ref, verdict.compiled))
    except SpecError as exc:
        raise CliError("; ".join(error_lines(exc)), EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc}", EXIT_USAGE) from None
    if len(flows) != 1:
        raise CliError(f"{path} holds {len(flows)} Flows; `kflow graph` draws one (put it in a "
                       "file of its own)", EXIT_USAGE)
    return flows[0]
