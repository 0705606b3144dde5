"""Generate the Markdown tables of Flow, Queue and FlowTemplate fields from the models."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from kflow.api.cron import (
    CronFlowSpec,
    CronFlowStatus,
    FlowRef,
    LastFlow,
    ScheduledFlow,
    ScheduledFlowMeta,
)
from kflow.api.models import (
    Backoff,
    Condition,
    FailedNode,
    FlowRun,
    FlowSpec,
    FlowStatus,
    FlowTemplateSpec,
    FlowTemplateStatus,
    NodeCounts,
    NodeOpts,
    NodeSpec,
    NotificationStatus,
    Notify,
    QueueSpec,
    QueueStatus,
    RateLimit,
    SecretKeyRef,
    TemplateParameter,
    TemplateRef,
    TemplateStatus,
    Webhook,
    Workers,
)

START = "<!-- fields:start -->"
END = "<!-- fields:end -->"

# (heading, model, path prefix, models documented in their own table instead of inline)
_SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("Flow `spec`", FlowSpec, "spec."),
    ("Flow node (`spec.nodes[]`, and inline children)", NodeSpec, ""),
    ("Node options (`opts` of a node, `spec.defaults`)", NodeOpts, ""),
    ("Backoff (`opts.backoff`)", Backoff, ""),
    ("Flow `status`", FlowStatus, "status."),
    ("Queue `spec`", QueueSpec, "spec."),
    ("Queue `status`", QueueStatus, "status."),
    ("CronFlow `spec`", CronFlowSpec, "spec."),
    ("CronFlow `status`", CronFlowStatus, "status."),
    ("FlowTemplate `spec`", FlowTemplateSpec, "spec."),
    ("FlowTemplate parameter (`spec.parameters[]`)", TemplateParameter, ""),
    ("FlowTemplate `status`", FlowTemplateStatus, "status."),
]
_OWN_TABLE: dict[type[BaseModel], str] = {
    NodeSpec: "node",
    NodeOpts: "node options",
    Backoff: "backoff",
    TemplateParameter: "parameter",
}
_INLINE = (RateLimit, Workers, NodeCounts, Condition, FailedNode, Notify, Webhook, SecretKeyRef,
           NotificationStatus, TemplateRef, FlowRun, TemplateStatus,
           ScheduledFlow, ScheduledFlowMeta, FlowRef, LastFlow)


def _unwrap(schema: dict[str, Any]) -> dict[str, Any]:
    branches = schema.get("anyOf")
    if branches:
        real = [branch for branch in branches if branch.get("type") != "null"]
        if len(real) == 1 and len(real) != len(branches):
            return {**{k: v for k, v in schema.items() if k != "anyOf"}, **real[0]}
    return schema


def _bounds(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f", {low}..{high}"
    if low is not None:
        return f", ≥ {low}"
    if high is not None:
        return f", ≤ {high}"
    if "maxItems" in schema:
        return f", at most {schema['maxItems']}"
    return ""


def _type_name(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    schema = _unwrap(schema)
    if "x-kflow-type" in schema:
        return str(schema["x-kflow-type"])
    if "enum" in schema:  # before $ref: a field may narrow an enum type to fewer values
        return " | ".join(f"`{value}`" for value in schema["enum"])
    if "$ref" in schema:
        target = schema["$ref"].rsplit("/", 1)[-1]
        extra = defs.get(target, {}).get("x-kflow-type")
        return str(extra) if extra else "object"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type_name(schema.get('items', {}), defs)}" + _bounds(schema)
    if kind == "string" and schema.get("format") == "date-time":
        return "timestamp"
    return f"{kind}{_bounds(schema)}"


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return "`[]`"
    if info.default is None or info.default is PydanticUndefined:
        return ""
    if isinstance(info.default, bool):
        return f"`{str(info.default).lower()}`"
    return f"`{info.default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _model_rows(model, prefix, schema, schema.get("$defs", {}))


def _model_rows(
    model: type[BaseModel], path: str, schema: dict[str, Any], defs: dict[str, Any]
) -> list[str]:
    # Recursion follows the models' own nesting (two levels at most), never user input.
    rows: list[str] = []
    for name, info in model.model_fields.items():
        alias = info.alias or name
        field_schema = _unwrap(schema.get("properties", {}).get(alias, {}))
        target = _model_of(info.annotation)
        type_name = _type_name(field_schema, defs)
        if target is not None and target in _OWN_TABLE:
            many = "list of " if "items" in field_schema else ""
            type_name = f"{many}{_OWN_TABLE[target]} (below)"
        rows.append(
            f"| `{path}{alias}` | {_cell(type_name)} | {_default(info)} "
            f"| {_cell(info.description or '')} |"
        )
        if target is not None and target in _INLINE:
            inner = field_schema.get("items", field_schema)
            sub_schema = defs.get(inner.get("$ref", "").rsplit("/", 1)[-1], {})
            sub_path = f"{path}{alias}[]." if "items" in field_schema else f"{path}{alias}."
            rows.extend(_model_rows(target, sub_path, sub_schema, defs))
    return rows


def _model_of(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        for inner in (candidate, *getattr(candidate, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def render() -> str:
    """The Markdown that goes between the README's field markers."""
    parts = [
        "<!-- Generated by `python -m kflow.api.docgen` from operator/kflow/api/models.py. -->"
    ]
    for heading, model, prefix in _SECTIONS:
        parts.append(f"\n#### {heading}\n")
        parts.append("| Field | Type | Default | Description |")
        parts.append("|---|---|---|---|")
        parts.extend(_rows(model, prefix))
    parts.append(
        "\nDurations are milliseconds (an integer) or a string such as `500ms`, `30s`, `2m`, "
        "`1h`, `1m30s`."
    )
    return "\n".join(parts) + "\n"


def replace_between_markers(text: str, generated: str) -> str:
    """`text` with everything between the field markers replaced by `generated`."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {START} and {END} are missing (or out of order)")
    return text[: start + len(START)] + "\n" + generated + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kflow.api.docgen", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--update", type=Path, metavar="README", help="rewrite between the markers")
    group.add_argument("--check", type=Path, metavar="README", help="exit 1 if the tables drifted")
    args = parser.parse_args(argv)
    generated = render()
    if args.update is None and args.check is None:
        sys.stdout.write(generated)
        return 0
    path: Path = args.update or args.check
    try:
        current = path.read_text()
        wanted = replace_between_markers(current, generated)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"{path}: {exc}\n")
        return 2
    if args.check is not None:
        if current != wanted:
            sys.stderr.write(
                f"{path}: the field tables differ from the models; run "
                f"`python -m kflow.api.docgen --update {path}`\n"
            )
            return 1
        return 0
    path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
