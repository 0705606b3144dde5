"""How the CLI draws cluster flows: the same tree as a local run from the API's graph and node
pages, the summary, durations, server-sent events, followed logs, folded graphs."""

from __future__ import annotations

from datetime import UTC, datetime

from kflow.api import Flow, load_manifests
from kflow.cli.client import parse_sse
from kflow.cli.cluster import new_lines
from kflow.cli.render import (
    GraphNode,
    TreeShape,
    format_duration,
    graph_of_api,
    node_info_of,
    render_tree,
    summary_lines,
    to_dot,
    to_mermaid,
)
from kflow.engine import NodeInfo
from kflow.graph import compile_flow
from tests.unit.test_cli_commands import ORDER


def order_flow():
    return compile_flow(next(o for o in load_manifests(ORDER) if isinstance(o, Flow)))


def api_graph(compiled) -> dict:
    """The /graph body the server gives for this flow (collapse=0), ids not names."""
    ids = {name: f"id{i}" for i, name in enumerate(reversed(list(compiled.nodes)))}
    return {"nodes": [{"id": ids[n], "name": n, "queue": node.queue, "state": "ready",
                       "group": None} for n, node in reversed(compiled.nodes.items())],
            "edges": [[ids[c], ids[n]] for n, node in compiled.nodes.items()
                      for c in node.children]}


def test_a_cluster_flow_draws_the_same_tree_as_its_local_run() -> None:
    compiled = order_flow()
    infos = {name: NodeInfo("completed", 1, {"ok": name}, None, None)
             for name in compiled.nodes}
    infos["process-payment"] = NodeInfo("failed", 3, None, "Declined: card\ntrace", None)
    shape = TreeShape.of_graph(api_graph(compiled))
    assert list(shape.roots) == list(compiled.roots)
    assert render_tree(shape, infos, unicode=False) == render_tree(compiled, infos,
                                                                   unicode=False)
    text = "\n".join(render_tree(shape, infos))
    assert "✘ process-payment [payment] failed (attempt 3): Declined: card" in text
    assert '✔ validate-order [validation] completed → {"ok":"validate-order"}' in text


def test_node_summaries_become_node_infos_and_a_missing_result_is_not_shown() -> None:
    info = node_info_of({"name": "a", "queue": "q", "state": "completed", "attempt": 2,
                         "error": None, "progress": None})
    assert info == NodeInfo("completed", 2, None, None, None)
    shape = TreeShape(roots=["a"], queues={"a": "q"}, children={"a": []})
    assert render_tree(shape, {"a": info}, unicode=False) == ["+ a [q] completed (attempt 2)"]


def test_a_settled_node_shows_how_long_it_ran_from_first_start_to_end() -> None:
    info = node_info_of({"name": "a", "queue": "q", "state": "completed", "attempt": 2,
                         "result": 7, "startedAt": "2026-11-30T10:00:00.000000Z",
                         "finishedAt": "2026-11-30T10:01:30.500000Z"})
    assert (info.started_ms, info.finished_ms) == (1796032800000, 1796032890500)
    running = node_info_of({"name": "b", "queue": "q", "state": "active", "attempt": 1,
                            "startedAt": "2026-11-30T10:00:00.000000Z", "finishedAt": None})
    shape = TreeShape(roots=["a"], queues={"a": "q", "b": "q"}, children={"a": ["b"]})
    assert render_tree(shape, {"a": info, "b": running}, unicode=False) == [
        "+ a [q] completed (attempt 2) in 1m30s -> 7", "`- > b [q] active"]


def test_summary_names_phase_counts_times_duration_and_failures() -> None:
    summary = {"name": "etl", "namespace": "data", "phase": "Failed", "total": 5, "done": 5,
               "counts": {"completed": 4, "failed": 1, "active": 0},
               "createdAt": "2026-11-30T10:00:00Z", "startedAt": "2026-11-30T10:00:05Z",
               "finishedAt": "2026-11-30T10:01:35Z", "suspended": False, "cancelled": False,
               "failures": [{"node": "load", "error": "IOError: disk\n  at x", "attempt": 2}]}
    lines = summary_lines(summary, datetime(2026, 11, 30, 11, tzinfo=UTC))
    assert lines[0] == "Flow data/etl: Failed 5/5 done (4 completed, 1 failed)"
    assert "started 2026-11-30T10:00:05Z" in lines[1] and "duration 1m30s" in lines[1]
    assert lines[2:] == ["failures:", "  load (attempt 2): IOError: disk", "        at x"]
    running = {**summary, "phase": "Running", "finishedAt": None, "failures": [],
               "suspended": True}
    lines = summary_lines(running, datetime(2026, 11, 30, 10, 2, 5, tzinfo=UTC))
    assert lines[0].startswith("Flow data/etl: Running (suspended)")
    assert "duration 2m00s" in lines[1]
    rerun = {**summary, "failures": [], "template": {"name": "etl", "generation": 4},
             "runGeneration": 3, "runs": [{"generation": 1, "phase": "Succeeded"},
                                          {"generation": 2, "phase": "Cancelled"}]}
    assert summary_lines(rerun, datetime(2026, 11, 30, 11, tzinfo=UTC))[2:] == [
        "  made from FlowTemplate etl (generation 4)",
        "  run of spec generation 3; 2 earlier runs, the last (generation 2) cancelled"]


def test_durations_read_at_a_glance() -> None:
    assert [format_duration(s) for s in (0.25, 42, 90, 3600 + 180, 86400 * 3 + 3600 * 4)] == [
        "0.2s", "42s", "1m30s", "1h03m", "3d04h"]


def test_server_sent_events_split_across_chunks_are_parsed_and_keep_alives_skipped() -> None:
    stream = [b'event: flow\ndata: {"phase": "Run', b'ning"}\nid: 1-0\n\n: keep-alive\n\n',
              b"event: node\r\ndata: {\"name\": \"a\", \"state\": \"active\"}\r\n\r\n",
              b"event: end\ndata: {}\n\n"]
    events = list(parse_sse(iter(stream)))
    assert [(e.name, e.data, e.id) for e in events] == [
        ("flow", {"phase": "Running"}, "1-0"), ("node", {"name": "a", "state": "active"}, "1-0"),
        ("end", {}, "1-0")]


def test_followed_logs_print_only_new_lines_even_when_the_kept_tail_moves() -> None:
    assert new_lines([], ["a", "b"]) == ["a", "b"]
    assert new_lines(["a", "b"], ["a", "b", "c"]) == ["c"]
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]  # "a" fell off
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines(["x"], ["y", "z"]) == ["y", "z"]


def test_a_folded_group_is_one_box_with_its_count_in_both_formats() -> None:
    body = {"nodes": [{"id": "g1", "name": "item-0", "queue": "work", "state": None,
                       "group": {"count": 10000, "counts": {"completed": 10000},
                                 "members": ["item-0"]}},
                      {"id": "agg", "name": 'agg "x"', "queue": "merge", "state": "failed",
                       "group": None}],
            "edges": [["g1", "agg"]]}
    nodes, edges = graph_of_api(body)
    assert nodes[0] == GraphNode("g1", "item-0", "work", None, 10000)
    mermaid = to_mermaid(nodes, edges)
    assert 'n0[["10000 x item-0 [work]"]]' in mermaid and "n0 --> n1" in mermaid
    assert 'n1["agg #34;x#34; [merge] failed"]' in mermaid and "class n1 failed" in mermaid
    dot = to_dot(nodes, edges)
    assert 'n1 [label="agg \\"x\\" [merge] failed" style=filled fillcolor="lightpink"];' in dot
    assert "n0 -> n1;" in dot and "shape=box3d" in dot


def rendered(renderable) -> str:
    import io

    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_a_flow_past_the_tree_limit_shows_its_summary_and_unfinished_nodes_only() -> None:
    from kflow.cli.cluster import TREE_NODE_LIMIT, FlowView

    summary = {"name": "big", "namespace": "n", "phase": "Running", "total": 100_000,
               "done": 10, "counts": {"completed": 10, "active": 1, "ready": 99_989}}
    view = FlowView(summary, attention=[{"name": "leaf-7", "queue": "q", "state": "active",
                                         "attempt": 2, "error": "was: timeout\nmore"}])
    text = rendered(view.renderable(unicode=True))
    assert text.startswith("Flow n/big: Running 10/100000 done")
    assert f"more than the {TREE_NODE_LIMIT:,} drawn as a tree" in text
    row = next(line for line in text.splitlines() if "leaf-7" in line)
    assert row.split()[:4] == ["leaf-7", "q", "active", "2"] and "was: timeout" in row
    assert "more" not in row


def test_node_detail_shows_place_data_result_and_errors() -> None:
    from kflow.cli.cluster import node_detail

    text = rendered(node_detail({
        "name": "pay", "queue": "payment", "state": "completed", "attempt": 2,
        "parents": ["ship", "stock"], "children": [], "inputs": {"amount": 5},
        "result": {"paymentId": "p-1"}, "error": None, "ignoredFailures": {"x": "boom"},
        "failedChildren": {}, "attempts": [{"attempt": 1, "log": "a"},
                                           {"attempt": 2, "log": "b"}],
        "logs": [{"time": "t", "attempt": 2, "message": "charged"}]}, "shop/order"))
    lines = text.splitlines()
    assert lines[0] == "Node shop/order/pay [payment]: completed (attempt 2)"
    assert "  parents: ship, stock" in lines and "  children: -" in lines
    assert '    "paymentId": "p-1"' in lines and '    "x": "boom"' in lines
    assert "error:" not in lines
    assert "logs: attempts 1, 2 kept, 1 job.log lines (`kflow logs FLOW NODE`)" in lines


def test_list_all_namespaces_reads_summaries_from_the_flow_status() -> None:
    from kflow.cli.cluster import flows_table, summary_of_flow

    flow = {"metadata": {"name": "etl", "namespace": "data", "uid": "u",
                         "creationTimestamp": "2026-11-30T10:00:00Z"},
            "spec": {"suspend": True},
            "status": {"phase": "Running", "total": 8, "progress": "3/8",
                       "counts": {"completed": 3, "failed": 1},
                       "startedAt": "2026-11-30T10:00:01Z"}}
    summary = summary_of_flow(flow)
    assert (summary["done"], summary["total"], summary["suspended"], summary["phase"]) == (
        3, 8, True, "Running")
    text = rendered(flows_table([summary, summary_of_flow({"metadata": {"name": "new",
                                                                        "namespace": "x"}})],
                                all_namespaces=True))
    header, first, second = text.splitlines()[:3]
    assert header.split() == ["NAMESPACE", "NAME", "PHASE", "DONE", "FAILED", "AGE", "DURATION"]
    assert first.split()[:6] == ["data", "etl", "Running", "(suspended)", "3/8", "1"]
    assert second.split()[:5] == ["x", "new", "Pending", "0/0", "0"]


class ScriptedFlow:
    """The one call wait_for makes, answered from a list of summaries (the last one repeats)."""

    def __init__(self, *phases: tuple[str, list[tuple[str, int]]]) -> None:
        self.answers = [{"phase": phase, "failures": [{"node": n, "attempt": a}
                                                      for n, a in failures]}
                        for phase, failures in phases]
        self.calls = 0

    def flow(self, namespace: str, name: str) -> dict:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


def test_wait_exits_0_on_succeeded_1_on_failed_and_6_on_timeout() -> None:
    from kflow.cli.cluster import wait_for

    api = ScriptedFlow(("Running", []), ("Succeeded", []))
    assert wait_for(api, "n", "f", target=None, timeout=None, interval=0)[0] == 0
    api = ScriptedFlow(("Running", []), ("Failed", [("a", 1)]))
    assert wait_for(api, "n", "f", target=None, timeout=None, interval=0)[0] == 1
    api = ScriptedFlow(("Pending", []), ("Running", []))
    assert wait_for(api, "n", "f", target="Running", timeout=None, interval=0)[0] == 0
    api = ScriptedFlow(("Running", []), ("Cancelled", []))
    assert wait_for(api, "n", "f", target="Succeeded", timeout=None, interval=0)[0] == 1
    api = ScriptedFlow(("Running", []))
    assert wait_for(api, "n", "f", target=None, timeout=0, interval=0)[0] == 6


def test_wait_after_retry_looks_past_the_failed_phase_the_flow_still_shows() -> None:
    from kflow.cli.cluster import wait_for_retry

    before = {"phase": "Failed", "failures": [{"node": "a", "attempt": 1}]}
    # The operator has not acted yet (still Failed, same failures), then runs, then succeeds.
    api = ScriptedFlow(("Failed", [("a", 1)]), ("Failed", [("a", 1)]), ("Running", []),
                       ("Succeeded", []))
    assert wait_for_retry(api, "n", "f", before, timeout=None, interval=0)[0] == 0
    assert api.calls == 4
    # The rerun failed again before a poll saw it run: a later attempt in the failures.
    api = ScriptedFlow(("Failed", [("a", 1)]), ("Failed", [("a", 2)]))
    assert wait_for_retry(api, "n", "f", before, timeout=None, interval=0)[0] == 1
    api = ScriptedFlow(("Failed", [("a", 1)]))
    assert wait_for_retry(api, "n", "f", before, timeout=0, interval=0)[0] == 6
