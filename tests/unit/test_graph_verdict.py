"""The one verdict lint, the admission webhook and the operator give a manifest."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.api import SpecError
from kflow.api.errors import error_lines
from kflow.graph import check_manifest


def flow(*nodes: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"name": "orders", "namespace": "etl"},
            "spec": {"nodes": list(nodes), **spec}}


def verdict_lines(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        check_manifest(doc)
    return error_lines(caught.value)


def test_a_schema_error_and_a_graph_error_are_reported_together() -> None:
    doc = flow(
        {"name": "load", "queue": "q", "opts": {"backoff": {"type": "linear"}},
         "children": ["transform"]},
        {"name": "transfrom", "queue": "q"},
    )

    lines = verdict_lines(doc)

    assert len(lines) == 2, lines
    assert lines[0].startswith('Flow etl/orders: node "load": spec.nodes[0].opts.backoff.type '
                               "must be one of 'fixed' or 'exponential'"), lines
    assert lines[1] == ('Flow etl/orders: node "load" lists child "transform", which no node '
                        'defines (did you mean "transfrom"?) (field spec.nodes[0].children[0])')


def test_an_inline_childs_error_is_not_hidden_by_a_top_level_error() -> None:
    doc = flow({"name": "top", "queue": "q", "opts": {"attempts": 0}, "children": [
        {"name": "leaf", "queue": "q",
         "opts": {"ignoreDependencyOnFailure": True, "removeDependencyOnFailure": True}}]})

    lines = verdict_lines(doc)

    assert len(lines) == 2, lines
    assert 'node "top": spec.nodes[0].opts.attempts must be at least 1' in lines[0]
    assert ('node "leaf": spec.nodes[0].children[0].opts: ignoreDependencyOnFailure and '
            "removeDependencyOnFailure") in lines[1]


def test_an_inline_schema_error_and_a_cycle_are_reported_together() -> None:
    doc = flow(
        {"name": "a", "queue": "q", "children": [
            {"name": "b", "queue": "q", "opts": {"backoff": {"type": "linear"}},
             "children": ["a"]}]},
    )

    lines = verdict_lines(doc)

    assert len(lines) == 2, lines
    assert 'node "b": spec.nodes[0].children[0].opts.backoff.type must be one of' in lines[0]
    assert 'the nodes form a cycle: "a" -> "b" -> "a"' in lines[1]


def test_the_graph_is_not_judged_when_node_names_cannot_be_read() -> None:
    # A nameless node would make every reference to it look unknown: no made-up errors.
    doc = flow({"name": "a", "queue": "q", "children": ["b"]}, {"queue": "q"})

    lines = verdict_lines(doc)

    assert lines == ["Flow etl/orders: node \"#1\": spec.nodes[1].name is required; add it"]


def test_a_valid_flow_is_compiled_and_a_queue_parsed() -> None:
    verdict = check_manifest(flow({"name": "a", "queue": "q", "children": [
        {"name": "b", "queue": "r"}]}))
    assert verdict.compiled is not None and set(verdict.compiled.nodes) == {"a", "b"}

    queue = check_manifest({"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue",
                            "metadata": {"name": "q"}, "spec": {"mode": "Job"}})
    assert queue.compiled is None and queue.obj.object_ref == "Queue default/q"


def test_error_lines_cap_a_long_report() -> None:
    doc = flow({"name": "a", "queue": "q", "children": [f"missing-{i}" for i in range(60)]})

    lines = verdict_lines(doc)

    assert len(lines) == 51 and lines[-1] == "Flow etl/orders: ... and 10 more problems"
