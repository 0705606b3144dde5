"""FlowTemplates: checking a template and making a Flow's nodes from one (kflow.graph.templates)."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.api.errors import SpecError, error_lines
from kflow.api.models import FlowTemplate
from kflow.graph import check_manifest
from kflow.graph.templates import check_template, expand

TEMPLATE: dict[str, Any] = {
    "apiVersion": "kflow.dev/v1alpha1",
    "kind": "FlowTemplate",
    "metadata": {"name": "etl", "namespace": "team"},
    "spec": {
        "parameters": [
            {"name": "date", "description": "day to load"},
            {"name": "shards", "type": "integer", "default": 4},
            {"name": "mode", "enum": ["full", "delta"], "default": "delta"},
            {"name": "tags", "type": "array", "default": []},
        ],
        "defaults": {"attempts": 3, "timeout": "10m"},
        "nodes": [
            {"name": "merge", "queue": "work",
             "data": {"day": "{{ params.date }}",
                      "note": "load of {{params.date}} ({{ params.mode }})"},
             "children": ["extract", {"name": "inline", "queue": "work",
                                      "data": {"n": "{{ params.shards }}"}}]},
            {"name": "extract", "queue": "io", "data": {"tags": "{{ params.tags }}",
                                                         "keep": "{{ params.unknown_here }}"}},
        ],
    },
}


def template(**changes: Any) -> FlowTemplate:
    doc = {**TEMPLATE, "spec": {**TEMPLATE["spec"], **changes}}
    return FlowTemplate.model_validate(doc)


def flow(parameters: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"name": "nightly", "namespace": "team"},
            "spec": {"templateRef": {"name": "etl", "parameters": parameters}, **spec}}


def lines(exc: pytest.ExceptionInfo[SpecError]) -> str:
    return "\n".join(error_lines(exc.value))


def test_a_placeholder_naming_no_parameter_is_refused_with_its_path() -> None:
    with pytest.raises(SpecError) as caught:
        check_template(template())
    text = lines(caught)
    assert "FlowTemplate team/etl" in text
    assert "spec.nodes[1].data uses {{ params.unknown_here }}, which spec.parameters does " \
        "not declare" in text


def known() -> FlowTemplate:
    nodes = [dict(TEMPLATE["spec"]["nodes"][0]),
             {"name": "extract", "queue": "io", "data": {"tags": "{{ params.tags }}"}}]
    return template(nodes=nodes)


def test_a_valid_template_compiles_and_its_graph_problems_name_the_template() -> None:
    compiled = check_template(known())
    assert set(compiled.nodes) == {"merge", "extract", "inline"}
    broken = template(nodes=[{"name": "a", "queue": "q", "children": ["b"]}])
    with pytest.raises(SpecError) as caught:
        check_template(broken)
    assert caught.value.errors[0].object_ref == "FlowTemplate team/etl"
    assert 'child "b"' in lines(caught)


def test_duplicate_parameters_and_bad_defaults_are_refused() -> None:
    with pytest.raises(SpecError) as caught:
        check_template(template(parameters=[{"name": "a"}, {"name": "a"}],
                                nodes=[{"name": "x", "queue": "q"}]))
    assert 'parameter "a" is declared twice' in lines(caught)
    with pytest.raises(SpecError) as bad:
        check_manifest({**TEMPLATE, "spec": {"parameters": [
            {"name": "n", "type": "integer", "default": "three"}],
            "nodes": [{"name": "x", "queue": "q"}]}})
    assert 'default is "three", not an integer' in lines(bad)


def test_parameters_go_into_data_typed_or_as_text() -> None:
    doc = expand(flow({"date": "2026-11-30", "shards": 8, "tags": ["a", "b"]}), known())
    nodes = {node["name"]: node for node in doc["spec"]["nodes"]}
    assert nodes["merge"]["data"] == {"day": "2026-11-30",
                                      "note": "load of 2026-11-30 (delta)"}
    assert nodes["merge"]["children"][1]["data"] == {"n": 8}  # typed, inline child too
    assert nodes["extract"]["data"] == {"tags": ["a", "b"]}
    assert "templateRef" not in doc["spec"]
    # The flow's own defaults are set field by field over the template's.
    raw = known().spec.model_dump(by_alias=True, exclude_unset=True)
    raw["defaults"] = {"attempts": 3, "timeout": "10m"}  # as written in the object
    doc = expand(flow({"date": "d"}, defaults={"attempts": 1}), known(), raw)
    assert doc["spec"]["defaults"] == {"attempts": 1, "timeout": "10m"}
    verdict = check_manifest(flow({"date": "d"}), template=known())
    assert verdict.compiled is not None and set(verdict.compiled.nodes) == {
        "merge", "extract", "inline"}


@pytest.mark.parametrize(("parameters", "fragment"), [
    ({}, 'spec.templateRef.parameters.date: parameter "date" of FlowTemplate team/etl is '
         "required (type string); give it a value"),
    ({"date": "d", "shards": "8"}, 'spec.templateRef.parameters.shards is "8", not an '
                                   'integer: parameter "shards"'),
    ({"date": "d", "shards": True}, "spec.templateRef.parameters.shards is a boolean, not an "
                                    "integer"),
    ({"date": "d", "mode": "half"}, 'spec.templateRef.parameters.mode is "half", not one of '
                                    'the values parameter "mode" allows: "full", "delta"'),
    ({"date": "d", "dtae": 1}, 'spec.templateRef.parameters.dtae: FlowTemplate team/etl has '
                               'no parameter "dtae" (it has: date, mode, shards, tags)'),
])
def test_bad_parameters_name_the_flow_the_field_and_the_fix(parameters: dict[str, Any],
                                                           fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        check_manifest(flow(parameters), template=known())
    assert caught.value.errors[0].object_ref == "Flow team/nightly"
    assert fragment in lines(caught)


def test_a_flow_needs_nodes_or_a_template_not_both() -> None:
    both = flow({"date": "d"}, nodes=[{"name": "a", "queue": "q"}])
    with pytest.raises(SpecError, match=r"either spec.nodes .* or spec.templateRef"):
        check_manifest(both)
    # Checked without its template, a templateRef Flow has no graph yet.
    assert check_manifest(flow({"date": "d"})).compiled is None
