"""Exit handlers (spec.onExit) without Redis: the compiler checks their graph like the main one,
templates carry them, the status and `kflow get` report them beside the flow's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kflow.api.errors import SpecError
from kflow.api.ids import FlowId
from kflow.api.models import FlowStatus, FlowTemplate
from kflow.cli.render import summary_lines
from kflow.engine import FlowSnapshot, NodeFailure, exit_flow_id, main_flow_id
from kflow.engine.exits import decode_graph, encode_graph
from kflow.graph.templates import check_template, expand
from kflow.graph.verdict import check_manifest
from kflow.kube.status import FlowView, build_status


def flow(on_exit: list[Any], nodes: list[Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"name": "etl", "namespace": "team-a"},
            "spec": {"nodes": nodes or [{"name": "load", "queue": "work"}], "onExit": on_exit}}


def errors_of(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        check_manifest(doc)
    return [(e.field, e.message) for e in caught.value.errors]


def test_the_exit_graph_compiles_apart_from_the_main_graph() -> None:
    compiled = check_manifest(flow([
        {"name": "notify", "queue": "alerts", "data": {"channel": "#etl"},
         "children": [{"name": "cleanup", "queue": "work"}]}])).compiled
    assert compiled is not None and list(compiled.nodes) == ["load"]
    assert compiled.on_exit is not None
    assert list(compiled.on_exit.nodes) == ["cleanup", "notify"]
    assert compiled.on_exit.roots == ("notify",) and compiled.on_exit.leaves == ("cleanup",)
    assert compiled.on_exit.queues == {"alerts", "work"}
    assert decode_graph(encode_graph(compiled.on_exit)) == compiled.on_exit


def test_an_exit_node_named_like_a_main_node_is_refused_at_its_place() -> None:
    [(field, message)] = errors_of(flow([{"name": "x", "queue": "q",
                                          "children": [{"name": "load", "queue": "q"}]}]))
    assert field == "spec.onExit[0].children[0]"
    assert 'node "load" is defined in spec.nodes and again at spec.onExit[0].children[0]' \
        in message and "unique across spec.nodes and spec.onExit" in message


def test_exit_children_resolve_only_within_the_exit_graph_and_main_ones_only_within_theirs(
        ) -> None:
    [(field, message)] = errors_of(flow([{"name": "notify", "queue": "q",
                                          "children": ["load"]}]))
    assert field == "spec.onExit[0].children[0]"
    assert 'node "notify" lists child "load", which no node defines' in message
    [(field, message)] = errors_of(flow(
        [{"name": "notify", "queue": "q"}],
        nodes=[{"name": "load", "queue": "q", "children": ["notify"]}]))
    assert field == "spec.nodes[0].children[0]" and 'child "notify"' in message


def test_a_cycle_among_exit_nodes_names_them_and_the_onexit_path() -> None:
    [(field, message)] = errors_of(flow([{"name": "a", "queue": "q", "children": ["b"]},
                                         {"name": "b", "queue": "q", "children": ["a"]}]))
    assert field.startswith("spec.onExit[") and '"a" -> "b" -> "a"' in message


def test_exit_node_data_must_be_an_object_to_receive_the_flow() -> None:
    [(field, message)] = errors_of(flow([{"name": "n", "queue": "q", "data": [1, 2]}]))
    assert field == "spec.onExit[0].data"
    assert "must be an object (or unset)" in message and "data.flow" in message


def test_a_bad_inline_exit_child_is_reported_under_onexit() -> None:
    fields = [f for f, _ in errors_of(flow([{"name": "n", "queue": "q",
                                              "children": [{"name": "m", "queue": "Bad!"}]}]))]
    assert fields == ["spec.onExit[0].children[0].queue"]


def test_more_than_100_exit_nodes_are_refused() -> None:
    many = [{"name": f"n{i}", "queue": "q"} for i in range(101)]
    assert any(field.startswith("spec.onExit") for field, _ in errors_of(flow(many)))


def test_a_template_puts_its_parameters_into_exit_nodes_data() -> None:
    template = FlowTemplate.model_validate({
        "metadata": {"name": "nightly", "namespace": "team-a"},
        "spec": {"parameters": [{"name": "channel", "type": "string"}],
                 "nodes": [{"name": "load", "queue": "work"}],
                 "onExit": [{"name": "notify", "queue": "alerts",
                             "data": {"to": "{{ params.channel }}"}}]}})
    check_template(template)
    doc = expand({"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
                  "metadata": {"name": "etl", "namespace": "team-a"},
                  "spec": {"templateRef": {"name": "nightly",
                                           "parameters": {"channel": "#ops"}}}}, template)
    compiled = check_manifest(doc).compiled
    assert compiled is not None and compiled.on_exit is not None
    assert compiled.on_exit.nodes["notify"].data == {"to": "#ops"}
    broken = template.model_copy(deep=True)
    broken.spec.on_exit[0].data = {"to": "{{ params.chanel }}"}
    with pytest.raises(SpecError, match=r"spec.onExit\[0\].data uses \{\{ params.chanel \}\}"):
        check_template(broken)


def test_the_exit_flow_id_is_the_flows_with_a_suffix() -> None:
    main = FlowId("team-a", "1234")
    assert exit_flow_id(main) == "team-a/1234.exit"
    assert main_flow_id(exit_flow_id(main)) == main and main_flow_id(main) == main


def snapshot(phase: str, done: int, total: int,
             failures: list[NodeFailure] | None = None) -> FlowSnapshot:
    return FlowSnapshot(phase=phase, total=total, counts={}, done=done,  # type: ignore[arg-type]
                        started_at_ms=1, finished_at_ms=2, failures=failures or [])


def test_status_reports_exit_handlers_beside_a_phase_they_never_change() -> None:
    view = FlowView(uid="u", namespace="team-a", name="etl", generation=1, valid=True,
                    exit_total=2)
    status = build_status(view, snapshot("Running", 0, 1), 10)
    assert status["exitHandlers"] == {"phase": "Pending", "progress": "0/2", "failures": []}
    view.exit_snapshot = snapshot("Failed", 2, 2, [NodeFailure("notify", "503", 3)])
    status = build_status(view, snapshot("Succeeded", 1, 1), 10)
    assert status["phase"] == "Succeeded"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["exitHandlers"] == {"phase": "Failed", "progress": "2/2", "failures": [
        {"node": "notify", "attempt": 3, "error": "503"}]}
    FlowStatus.model_validate(status)  # within the CRD's bounds
    without = FlowView(uid="v", namespace="team-a", name="etl", generation=1, valid=True)
    assert "exitHandlers" not in build_status(without, snapshot("Succeeded", 1, 1), 10)


def test_kflow_get_prints_the_exit_handlers_phase_progress_and_failures() -> None:
    from datetime import UTC, datetime

    lines = summary_lines({"namespace": "team-a", "name": "etl", "phase": "Failed",
                           "total": 1, "done": 1, "exitHandlers": {
                               "phase": "Failed", "progress": "1/2", "failures": [
                                   {"node": "notify", "attempt": 1, "error": "503\ntrace"}]}},
                          datetime.now(UTC))
    assert "  on exit: Failed 1/2" in lines and "    notify (attempt 1): 503" in lines


def test_kflow_lint_counts_the_exit_handler_nodes_and_refuses_a_shared_name(
        tmp_path: Path) -> None:
    import io

    from kflow.cli.lint import lint_files
    from kflow.devkit.checkout import REPO

    out, err = io.StringIO(), io.StringIO()
    assert lint_files([str(REPO / "examples" / "on-exit.yaml")], out, err) == 0
    assert "Flow default/nightly-backup: ok (2 nodes, 1 queues, 2 exit handler nodes)" \
        in out.getvalue()
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "examples" / "on-exit.yaml").read_text().replace(
        "name: release-lock", "name: dump-database"))
    out, err = io.StringIO(), io.StringIO()
    assert lint_files([str(bad)], out, err) == 1
    assert "spec.onExit[0].children[0]; names must be unique" in out.getvalue() + err.getvalue()


def test_an_exit_handlers_job_carries_the_exit_flow_uid_and_is_owned_by_the_flow() -> None:
    from kflow.engine import Attempt
    from kflow.kube.jobs import LABEL_FLOW_UID, RedisEnv, build_job, job_identity

    uid = "0f4c1b2e-1111-2222-3333-444455556666"
    attempt = Attempt(flow_uid=f"{uid}.exit", namespace="team-a", flow_name="etl",
                      node="notify", queue="alerts", attempt=1, token="ab" * 8,
                      data={"flow": {"phase": "Failed"}}, timeout_ms=None)
    job = build_job(attempt, flow_uid=attempt.flow_uid,
                    template={"spec": {"containers": [{"name": "main", "image": "x"}]}},
                    redis=RedisEnv())
    assert job["metadata"]["labels"][LABEL_FLOW_UID] == f"{uid}.exit"
    [owner] = job["metadata"]["ownerReferences"]
    assert owner["uid"] == uid and owner["kind"] == "Flow" and owner["name"] == "etl"
    ident = job_identity(job)
    assert ident is not None and ident.flow_uid == f"{uid}.exit"
