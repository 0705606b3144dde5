"""FlowTemplates: check a template, and make a Flow's nodes from one (`spec.templateRef`).

Parameters reach nodes' `data` only. Names, queues, children and options are copied as the
template has them, so no parameter value can change the graph's shape: a template that
compiles makes a graph that compiles, whatever a Flow passes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from kflow.api.errors import SpecError, combine
from kflow.api.models import (
    API_VERSION,
    Flow,
    FlowTemplate,
    ObjectMeta,
    TemplateParameter,
    object_ref,
    parameter_type_error,
)
from kflow.graph.compiler import compile_flow
from kflow.graph.dag import CompiledFlow

# `{{ params.NAME }}`, spaces inside the braces optional.
PLACEHOLDER = re.compile(r"\{\{\s*params\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def check_template(template: FlowTemplate) -> CompiledFlow:
    """The template's graph, compiled; raises SpecError naming the FlowTemplate, the field and
    the fix (a duplicate parameter, a placeholder naming no parameter, any graph problem)."""
    ref = template.object_ref
    errors: list[SpecError] = []
    seen: set[str] = set()
    for index, parameter in enumerate(template.spec.parameters):
        if parameter.name in seen:
            errors.append(SpecError(ref, f"spec.parameters[{index}].name",
                                    f"spec.parameters[{index}].name: parameter "
                                    f'"{parameter.name}" is declared twice; keep one'))
        seen.add(parameter.name)
    raw = template.spec.model_dump(by_alias=True, exclude_unset=True, mode="json")
    for path, name in [*_placeholders(raw.get("nodes", []), "spec.nodes"),
                       *_placeholders(raw.get("onExit", []), "spec.onExit")]:
        if name not in seen:
            known = ", ".join(sorted(seen)) or "none"
            errors.append(SpecError(ref, path, f'{path} uses {{{{ params.{name} }}}}, which '
                                    f"spec.parameters does not declare (declared: {known}); "
                                    "declare it or fix the name"))
    try:
        compiled = compile_flow(_as_flow(template, raw))
    except SpecError as exc:
        errors.extend(SpecError(ref, e.field, e.message) for e in exc.errors)
        compiled = None
    if errors:
        raise combine(errors)
    assert compiled is not None
    return compiled


def _as_flow(template: FlowTemplate, raw: Mapping[str, Any]) -> Flow:
    spec = {"nodes": raw.get("nodes", [])}
    for key in ("defaults", "onExit"):
        if key in raw:
            spec[key] = raw[key]
    meta = template.metadata.model_dump(by_alias=True, exclude_none=True)
    flow = Flow.model_validate({"apiVersion": API_VERSION, "kind": "Flow",
                                "metadata": meta, "spec": spec})
    try:
        flow.located_nodes()
    except SpecError as exc:
        raise combine([SpecError(template.object_ref, e.field, e.message)
                       for e in exc.errors]) from None
    return flow


def expand(flow: Mapping[str, Any], template: FlowTemplate,
           raw_spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Flow document `flow` (which has `spec.templateRef`) with the template's nodes, the
    parameters put into their data and the defaults merged; `templateRef` is dropped.
    `raw_spec`: the template's spec as stored (copied as written, durations and all); the
    parsed template's when not given.

    Raises SpecError naming the Flow and `spec.templateRef.parameters.<name>` for an unknown,
    missing or ill-typed parameter.
    """
    spec = dict(flow.get("spec") or {})
    meta = flow.get("metadata") or {}
    ref = object_ref("Flow", ObjectMeta.model_validate(dict(meta)))
    reference = spec.pop("templateRef", None) or {}
    values = _parameter_values(ref, template, reference.get("parameters") or {})
    raw = raw_spec if raw_spec is not None else \
        template.spec.model_dump(by_alias=True, exclude_unset=True, mode="json")
    spec["nodes"] = [_substituted(node, values) for node in raw.get("nodes", [])]
    if raw.get("onExit"):  # the template's exit handlers, then any the Flow adds
        spec["onExit"] = [*(_substituted(node, values) for node in raw["onExit"]),
                          *(spec.get("onExit") or [])]
    defaults = {**(raw.get("defaults") or {}), **(spec.get("defaults") or {})}
    if defaults:
        spec["defaults"] = defaults
    return {**flow, "spec": spec}


def template_spec(expanded: Mapping[str, Any]) -> dict[str, Any]:
    """What of an expanded Flow document is pinned in `status.template.spec`."""
    spec = expanded.get("spec") or {}
    return {key: spec[key] for key in ("nodes", "defaults", "onExit") if key in spec}


def _parameter_values(ref: str, template: FlowTemplate,
                      given: Mapping[str, Any]) -> dict[str, Any]:
    declared: dict[str, TemplateParameter] = {p.name: p for p in template.spec.parameters}
    errors: list[SpecError] = []
    where = "spec.templateRef.parameters"
    for name in given:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            errors.append(SpecError(ref, f"{where}.{name}",
                                    f"{where}.{name}: {template.object_ref} has no parameter "
                                    f'"{name}" (it has: {known}); remove it or fix the name'))
    values: dict[str, Any] = {}
    for name, parameter in declared.items():
        field = f"{where}.{name}"
        if name not in given or given[name] is None:
            if parameter.required:
                errors.append(SpecError(ref, field, f"{field}: parameter \"{name}\" of "
                                        f"{template.object_ref} is required (type "
                                        f"{parameter.type}); give it a value"))
                continue
            values[name] = parameter.default
            continue
        value = given[name]
        why = parameter_type_error(parameter.type, value)
        if why is not None:
            article = "an" if parameter.type[0] in "aeiou" else "a"
            errors.append(SpecError(ref, field, f"{field} {why}: parameter \"{name}\" of "
                                    f"{template.object_ref} takes {article} {parameter.type}"))
            continue
        if parameter.enum is not None and value not in parameter.enum:
            allowed = ", ".join(json.dumps(v) for v in parameter.enum)
            errors.append(SpecError(ref, field, f"{field} is {json.dumps(value)}, not one of "
                                    f"the values parameter \"{name}\" allows: {allowed}"))
            continue
        values[name] = value
    if errors:
        raise combine(errors)
    return values


def _substituted(node: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(node)
    if "data" in out:
        out["data"] = _fill(out["data"], values)
    if "children" in out:
        out["children"] = [child if isinstance(child, str) else _substituted(child, values)
                           for child in out["children"]]
    return out


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value.strip())
        if whole is not None and whole.group(1) in values:
            return values[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: _text(values[m.group(1)]) if m.group(1) in values
                               else m.group(0), value)
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _placeholders(nodes: list[Any], prefix: str) -> list[tuple[str, str]]:
    """(path of the data, parameter name) of every placeholder in nodes' data."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(node, f"{prefix}[{i}]") for i, node in enumerate(nodes)]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, Mapping):
            continue
        for name in PLACEHOLDER.findall(json.dumps(node.get("data"))):
            found.append((f"{path}.data", name))
        for index, child in enumerate(node.get("children") or []):
            stack.append((child, f"{path}.children[{index}]"))
    found.sort()
    return found
