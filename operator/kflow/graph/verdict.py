"""The one verdict on a Flow or Queue manifest: what `kflow lint`, the admission webhook and the
operator's `Valid` condition all report, schema and graph problems together.

Pydantic stops at the first layer that fails: a bad field in a top-level node hides every
inline child, and any schema error hides the graph (unknown children, cycles). A user would
then fix one error, apply, and meet the next. So when the schema fails, the verdict reads the
manifest again through outlines that keep only what each further check needs, and reports
what those checks find as well, wherever the outline itself is sound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kflow.api.errors import SpecError, combine
from kflow.api.manifests import NestingError, parse_manifest
from kflow.api.models import API_VERSION, Flow, FlowTemplate, Queue
from kflow.graph.compiler import compile_flow
from kflow.graph.dag import CompiledFlow
from kflow.graph.templates import check_template, expand

# Stands in for every queue name in an outline: queues play no part in the graph checks.
_OUTLINE_QUEUE = "outline"


@dataclass(frozen=True)
class Verdict:
    """A manifest kflow accepts: the parsed object and, for a Flow or FlowTemplate, its
    compiled graph (None for a Flow with `templateRef` checked without its template)."""

    obj: Flow | Queue | FlowTemplate
    compiled: CompiledFlow | None


def check_manifest(doc: Mapping[str, Any], *, source: str = "manifest",
                   template: FlowTemplate | None = None) -> Verdict:
    """Validate one manifest and compile it if it is a Flow or a FlowTemplate.

    A Flow with `spec.templateRef` is compiled from `template` (its parameters checked, put
    into the nodes); without one, only its own fields are checked.

    Raises SpecError naming the object, node, field and fix of every problem found: schema
    errors first, then (where the node names and child lists can still be read) the errors of
    inline children and of the graph that the schema errors would otherwise hide.
    """
    try:
        obj = parse_manifest(doc, source=source)
    except SpecError as exc:
        raise combine(_with_hidden_errors(doc, exc.errors)) from None
    if isinstance(obj, Queue):
        return Verdict(obj, None)
    if isinstance(obj, FlowTemplate):
        return Verdict(obj, check_template(obj))
    if obj.spec.template_ref is None:
        return Verdict(obj, compile_flow(obj))
    if template is None:
        return Verdict(obj, None)
    expanded = check_manifest(expand(doc, template), source=source)
    return Verdict(expanded.obj, expanded.compiled)


def _with_hidden_errors(doc: Mapping[str, Any], errors: list[SpecError]) -> list[SpecError]:
    if not (isinstance(doc, Mapping) and doc.get("kind") == "Flow"
            and doc.get("apiVersion") == API_VERSION):
        return errors
    if any(isinstance(error, NestingError) for error in errors):
        return errors  # the outlines would hand the too-deep values to recursive code
    seen = {(error.field, error.message) for error in errors}
    result = list(errors)
    for error in [*_inline_errors(doc), *_graph_errors(doc)]:
        if (error.field, error.message) not in seen:
            seen.add((error.field, error.message))
            result.append(error)
    return result


def _inline_errors(doc: Mapping[str, Any]) -> list[SpecError]:
    """Schema errors of inline children, which pydantic never reached if a top-level node failed.

    The outline keeps each top-level node's name and children as written (inline children
    whole) and drops its own fields, which the first pass has judged already.
    """
    outline = _outline_flow(doc, lambda node: {
        "name": node.get("name"),
        "queue": _OUTLINE_QUEUE,
        "children": node.get("children", []),
    })
    flow = _parse(outline)
    if flow is None:
        return []
    try:
        flow.located_nodes()
    except SpecError as exc:
        return exc.errors
    return []


def _graph_errors(doc: Mapping[str, Any]) -> list[SpecError]:
    """Graph errors of the flow reduced to node names and child lists, if those are sound."""
    flow = _parse(_outline_flow(doc, _outline_tree))
    if flow is None:
        return []
    try:
        compile_flow(flow)
    except SpecError as exc:
        return exc.errors
    return []


def _parse(outline: dict[str, Any] | None) -> Flow | None:
    if outline is None:
        return None
    try:
        return Flow.model_validate(outline)
    except ValidationError:
        return None  # names or child lists are broken: the graph cannot be read


def _outline_flow(doc: Mapping[str, Any], outline_node: Any) -> dict[str, Any] | None:
    spec = doc.get("spec")
    nodes = spec.get("nodes") if isinstance(spec, Mapping) else None
    if not isinstance(nodes, list) or not all(isinstance(node, Mapping) for node in nodes):
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": "Flow",
        "metadata": doc.get("metadata"),
        "spec": {"nodes": [outline_node(node) for node in nodes]},
    }


def _outline_tree(node: Mapping[str, Any]) -> dict[str, Any]:
    """Name and children of `node` and of every inline child, nothing else; iterative, so a
    deep inline chain needs no recursion."""
    root = _outline_one(node)
    stack = [(node, root)]
    while stack:
        raw, outline = stack.pop()
        children = raw.get("children", [])
        if not isinstance(children, list):
            outline["children"] = children  # invalid: the outline fails to parse, as it should
            continue
        for child in children:
            if isinstance(child, Mapping):
                inner = _outline_one(child)
                outline["children"].append(inner)
                stack.append((child, inner))
            else:
                outline["children"].append(child)
    return root


def _outline_one(node: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": node.get("name"), "queue": _OUTLINE_QUEUE, "children": []}
