"""Pydantic models of the Flow and Queue resources (group kflow.dev, version v1alpha1)."""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    Strict,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from kflow.api.durations import DURATION_PATTERN, format_duration, parse_duration
from kflow.api.errors import PATTERN_RULES, SpecError, combine, from_validation_error
from kflow.api.ids import QueueId
from kflow.api.states import FLOW_PHASES, FlowPhase

GROUP = "kflow.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# Set (to any new value) on a Flow: run its failed nodes again, or start over a flow whose
# state was lost. The operator watches it; the API and the CLI set it.
ANNOTATION_RETRY = f"{GROUP}/retry"

# Lower runs first and 0 is the highest, as in BullMQ (whose ceiling is 2**21). A queue ranks a
# node by priority * 2**32 + FIFO sequence in a Redis score, a double exact only below 2**53,
# so the highest number a node can carry is 2**21 - 1 (kflow.store.codec checks the same bound).
MAX_PRIORITY = 2**21 - 1
# The whole Flow object lives in etcd, whose objects are capped at 1.5 MB; a few large payloads
# would fill that, so a node's data is kept small and big inputs travel by reference.
MAX_DATA_BYTES = 256 * 1024
# Levels of mappings and lists one field may nest (a node's data, opts, a Queue's template...):
# deeper values would exhaust the recursion of the JSON encoder and of pydantic (README, Limits).
MAX_NESTING = 64
NESTING_FIX = "flatten it, or pass large inputs by reference"
MAX_FIRST_FAILURES = 10
MAX_EXIT_NODES = 100  # top-level nodes of spec.onExit (exit handlers)
MAX_NODES_PER_OBJECT = 50_000  # top-level nodes of a Flow stored in Kubernetes (see FlowSpec)
MAX_FAILURE_MESSAGE = 1024
MAX_CONDITION_MESSAGE = 32_768

NODE_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
# A Kubernetes object name (RFC 1123 subdomain): a node's queue names a Queue object.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_NAME_LENGTH = 253
PATTERN_RULES[NODE_NAME_PATTERN] = (
    "be letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)
PATTERN_RULES[OBJECT_NAME_PATTERN] = (
    "be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting and "
    "ending with a letter or digit"
)

# A key of a Secret's data (what `kubectl create secret --from-literal=KEY=...` accepts).
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
PATTERN_RULES[SECRET_KEY_PATTERN] = "be a Secret key: letters, digits, '-', '_' and '.'"
NotificationState = Literal["Delivered", "Failed"]

OnFailure = Literal["failParent", "ignore", "remove", "continueParent"]
BackoffType = Literal["fixed", "exponential"]
QueueMode = Literal["Job", "Worker"]
ConditionStatus = Literal["True", "False", "Unknown"]

# The BullMQ booleans and the onFailure policy each one selects when true.
ON_FAILURE_ALIASES: dict[str, OnFailure] = {
    "failParentOnFailure": "failParent",
    "ignoreDependencyOnFailure": "ignore",
    "removeDependencyOnFailure": "remove",
    "continueParentOnFailure": "continueParent",
}
_ALIAS_ATTRS = {
    "failParentOnFailure": "fail_parent_on_failure",
    "ignoreDependencyOnFailure": "ignore_dependency_on_failure",
    "removeDependencyOnFailure": "remove_dependency_on_failure",
    "continueParentOnFailure": "continue_parent_on_failure",
}

# Schema fragments; keys starting with "x-kflow-" are read by the docs generator and dropped
# from the CRDs.
# (`minimum` applies to the integer form and `pattern` to the string form, as in JSON schema.)
_DURATION_SCHEMA: dict[str, Any] = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "minimum": 0,
    "pattern": DURATION_PATTERN,
    "x-kflow-type": "duration",
}
_ANY_JSON_SCHEMA: dict[str, Any] = {
    "x-kubernetes-preserve-unknown-fields": True,
    "x-kflow-type": "any JSON",
}


def _duration(value: Any) -> int:
    return parse_duration(value)


Duration = Annotated[int, BeforeValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]
StrictInt = Annotated[int, Strict()]
StrictBool = Annotated[bool, Strict()]
NodeName = Annotated[
    str, Strict(), Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NODE_NAME_PATTERN)
]
ObjectName = Annotated[
    str, Strict(), Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=OBJECT_NAME_PATTERN)
]


class _Spec(BaseModel):
    """Base of everything a user writes: camelCase in YAML, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=False,
    )


class _Status(BaseModel):
    """Base of what the operator writes: camelCase, unknown fields ignored for forward compat."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Backoff(_Spec):
    """How long to wait between attempts of a failing node."""

    model_config = ConfigDict(
        json_schema_extra={"x-kflow-type": "object, or a duration meaning a fixed delay"}
    )

    type: BackoffType = Field(
        "fixed",
        description="`fixed` waits `delay` before every retry; `exponential` waits "
        "`delay * 2^(attempt-1)`, capped by `maxDelay`.",
    )
    delay: Duration = Field(
        0, description="Base wait before a retry: milliseconds or a duration such as `1s`, `2m`."
    )
    max_delay: Duration | None = Field(
        None, description="Upper bound of any single wait (useful with `exponential`)."
    )
    jitter: Annotated[float, Strict()] = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of each wait that is randomised, 0..1, so that many retries do not "
        "arrive at once.",
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_delay(cls, value: Any) -> Any:
        # BullMQ accepts `backoff: 1000` for a fixed delay; so do we, also as "1s".
        if isinstance(value, int | str) and not isinstance(value, bool):
            return {"type": "fixed", "delay": value}
        return value

    @model_validator(mode="after")
    def _max_not_below_delay(self) -> Backoff:
        if self.max_delay is not None and self.max_delay < self.delay:
            raise PydanticCustomError(
                "max_delay_below_delay",
                "maxDelay ({max_delay}) is shorter than delay ({delay}); raise maxDelay or "
                "lower delay",
                {
                    "max_delay": format_duration(self.max_delay),
                    "delay": format_duration(self.delay),
                },
            )
        return self


class NodeOpts(_Spec):
    """Options of one node (`opts`) or of every node (`spec.defaults`); unset fields inherit."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": " + ".join(
                        f"(has(self.{alias}) && self.{alias} ? 1 : 0)"
                        for alias in ON_FAILURE_ALIASES
                    )
                    + " <= 1",
                    "message": "set at most one of failParentOnFailure, ignoreDependencyOnFailure, "
                    "removeDependencyOnFailure, continueParentOnFailure to true; they are aliases "
                    "of onFailure",
                },
                {
                    "rule": "!has(self.onFailure) || ("
                    + " && ".join(
                        f"(!has(self.{alias}) || self.{alias} == (self.onFailure == '{policy}'))"
                        for alias, policy in ON_FAILURE_ALIASES.items()
                    )
                    + ")",
                    "message": "onFailure and a BullMQ alias (failParentOnFailure, "
                    "ignoreDependencyOnFailure, removeDependencyOnFailure, "
                    "continueParentOnFailure) disagree; set only onFailure",
                },
            ]
        }
    )

    attempts: StrictInt | None = Field(
        None, ge=1, description="How many times the node may run before it fails (default 1)."
    )
    backoff: Backoff | None = Field(
        None,
        description="Wait between attempts: `{type: fixed|exponential, delay, maxDelay, jitter}`, "
        "or just a duration for a fixed delay (as in BullMQ).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority: StrictInt | None = Field(
        None,
        ge=0,
        le=MAX_PRIORITY,
        description=f"Dispatch order within a queue: lower runs first, 0 is the highest "
        f"(as in BullMQ; 0..{MAX_PRIORITY}, default 0).",
    )
    lifo: StrictBool | None = Field(
        None,
        description="Last in, first out (BullMQ's `lifo`): among ready nodes of the same "
        "priority, this one is taken before those queued earlier; FIFO when unset.",
    )
    delay: Duration | None = Field(
        None, description="Wait this long after the node becomes ready before its first attempt."
    )
    timeout: Duration | None = Field(
        None,
        description="An attempt running longer than this fails (and may be retried); "
        "no limit when unset.",
    )
    on_failure: OnFailure | None = Field(
        None,
        description="What a parent does when this node has failed for good: `failParent` "
        "(default; the parent fails too, with this node's error as cause), `ignore` (the "
        "parent runs and sees the failure), `remove` (the dependency disappears), "
        "`continueParent` (the parent starts at once and reads the error with "
        "`job.failed_children()`; its other children still run to their end).",
    )
    fail_parent_on_failure: StrictBool | None = Field(
        None,
        description="BullMQ alias: `true` means `onFailure: failParent`; `false` (without "
        "another alias) means `onFailure: ignore`, so the parent still runs.",
    )
    ignore_dependency_on_failure: StrictBool | None = Field(
        None, description="BullMQ alias: `true` means `onFailure: ignore`."
    )
    remove_dependency_on_failure: StrictBool | None = Field(
        None, description="BullMQ alias: `true` means `onFailure: remove`."
    )
    continue_parent_on_failure: StrictBool | None = Field(
        None, description="BullMQ alias: `true` means `onFailure: continueParent`."
    )

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: int | None) -> int | None:
        if value == 0:
            raise PydanticCustomError(
                "timeout_zero", "must be longer than 0; leave timeout out for no limit"
            )
        return value

    def _aliases(self) -> dict[str, bool]:
        aliases: dict[str, bool] = {}
        for alias, attr in _ALIAS_ATTRS.items():
            value = getattr(self, attr)
            if value is not None:
                aliases[alias] = value
        return aliases

    @model_validator(mode="after")
    def _one_failure_policy(self) -> NodeOpts:
        aliases = self._aliases()
        chosen = [alias for alias, value in aliases.items() if value]
        if len(chosen) > 1:
            raise PydanticCustomError(
                "on_failure_aliases",
                "{aliases} are {both_or_all} set to true, but they are alternative names of one "
                "setting; set only one, or better, onFailure",
                {
                    "aliases": ", ".join(chosen[:-1]) + " and " + chosen[-1],
                    "both_or_all": "both" if len(chosen) == 2 else "all",
                },
            )
        if self.on_failure is not None:
            for alias, value in aliases.items():
                if value != (self.on_failure == ON_FAILURE_ALIASES[alias]):
                    raise PydanticCustomError(
                        "on_failure_conflict",
                        "onFailure is {policy} but {alias} is {value}; they disagree, so set "
                        "only onFailure",
                        {
                            "policy": repr(self.on_failure),
                            "alias": alias,
                            "value": str(value).lower(),
                        },
                    )
        return self

    def on_failure_policy(self, inherited: OnFailure = "failParent") -> OnFailure:
        """The effective onFailure of these options, given what the node would otherwise inherit."""
        if self.on_failure is not None:
            return self.on_failure
        aliases = self._aliases()
        for alias, value in aliases.items():
            if value:
                return ON_FAILURE_ALIASES[alias]
        if aliases.get("failParentOnFailure") is False:
            return "ignore"
        # `xOnFailure: false` only says "not x": if x is what would be inherited, fall back.
        if any(ON_FAILURE_ALIASES[alias] == inherited for alias in aliases):
            return "failParent"
        return inherited


def _child_ref(value: Any) -> str | dict[str, Any] | NodeSpec:
    if isinstance(value, str | NodeSpec):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise PydanticCustomError(
        "child_ref",
        "a child must be the name of a node defined in this flow (a string) or an inline node "
        "(a mapping with name and queue), not {kind} {value}",
        {"kind": type(value).__name__, "value": repr(value)[:40]},
    )


# Children are parsed one level at a time (the compiler walks them iteratively), so neither a
# deeply nested flow nor the CRD schema, which cannot be recursive, needs recursion.
ChildRef = Annotated[
    "str | dict[str, Any] | NodeSpec",
    PlainValidator(_child_ref),
    WithJsonSchema(
        {"x-kubernetes-preserve-unknown-fields": True, "x-kflow-type": "string or Node"}
    ),
]


def nested_deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` holds more than `levels` levels of mappings and lists; iterative, and it
    stops at the first path that goes too deep (so a cycle counts as too deep)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, Mapping):
            items: Any = current.values()
        elif isinstance(current, list | tuple):
            items = current
        else:
            continue
        if level > levels:
            return True
        stack.extend((item, level + 1) for item in items
                     if isinstance(item, Mapping | list | tuple))
    return False


def _json_size(value: Any) -> int:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return len(text.encode())


def _size_text(size: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def _sizes_text(size: int, limit: int) -> tuple[str, str]:
    """(size, limit) for a message; in bytes when rounding would make them read the same."""
    size_text, limit_text = _size_text(size), _size_text(limit)
    if size_text == limit_text:
        return f"{size} bytes", f"{limit} bytes"
    return size_text, limit_text


# A fan-out's size: a literal list is kept in the Flow object (so, in etcd), a count is not.
MAX_FOR_EACH_ITEMS = 10_000
MAX_FOR_EACH_COUNT = 1_000_000
MAX_WHEN_LENGTH = 4096
# `forEach.path`: keys (or list indexes) separated by dots, into the `from` node's value.
FOR_EACH_PATH_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
PATTERN_RULES[FOR_EACH_PATH_PATTERN] = (
    "keys (or list indexes) of the value separated by dots, such as files or result.0.files"
)


class ForEach(_Spec):
    """Run the node once per item: of a list another node returns, of a literal list, or of
    a count. Each item is a node of its own (`<name>[<index>]`), with the node's queue and
    options and `{..data, item, index}` as its data; the node's parents get the items'
    values as one list, in item order."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # `items` holds JSON of any type, which CEL cannot see: the webhook and the
                # operator check the rest of "exactly one" (ForEach._one_source).
                {
                    "rule": "!(has(self.from) && has(self.count))",
                    "message": "set exactly one of from (a node whose value holds the list), "
                    "items (a literal list) or count (items 0..count-1)",
                },
                {
                    "rule": "!has(self.path) || has(self.from)",
                    "message": "path reads into the value of the from node; set it only "
                    "with from",
                },
            ]
        }
    )

    from_: NodeName | None = Field(
        None,
        alias="from",
        description="A node of this flow whose value (at `path`) is the list to run over; "
        "this node waits for it, as for a child.",
    )
    path: Annotated[str, Strict(), Field(max_length=MAX_NAME_LENGTH,
                                          pattern=FOR_EACH_PATH_PATTERN)] | None = Field(
        None,
        description="Where the list is in the `from` node's value: keys (or list indexes) "
        "separated by dots. Unset: the value itself.",
    )
    items: list[Annotated[Any, WithJsonSchema(_ANY_JSON_SCHEMA)]] | None = Field(
        None,
        max_length=MAX_FOR_EACH_ITEMS,
        description=f"A literal list, at most {MAX_FOR_EACH_ITEMS:,} items (larger lists come "
        "from a node's value, or use count).",
    )
    count: StrictInt | None = Field(
        None,
        ge=0,
        le=MAX_FOR_EACH_COUNT,
        description="Run over the items 0, 1, ..., count-1: a large fan-out in one line.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ForEach:
        given = [name for name, value in (("from", self.from_), ("items", self.items),
                                          ("count", self.count)) if value is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "for_each_source",
                "sets {given}; set exactly one of from (a node whose value holds the list), "
                "items (a literal list) or count (items 0..count-1)",
                {"given": " and ".join(given) if given else "none of them"})
        if self.path is not None and self.from_ is None:
            raise PydanticCustomError(
                "for_each_path",
                "sets path without from; path reads into the value of the from node")
        return self


class NodeSpec(_Spec):
    """One unit of work: runs on a queue once its children are done."""

    name: NodeName = Field(
        description="Unique name of the node within the flow; children refer to it by this name."
    )
    queue: ObjectName = Field(
        description="Name of the `Queue` (in the Flow's namespace) whose workers run this node."
    )
    data: Annotated[Any, WithJsonSchema(_ANY_JSON_SCHEMA)] = Field(
        None,
        description=f"Input of the node, any JSON, at most {MAX_DATA_BYTES // 1024} KiB "
        "serialised (the Flow lives in etcd, capped at 1.5 MB per object): pass large inputs "
        "by reference, e.g. an object-storage URL.",
    )
    opts: NodeOpts | None = Field(
        None, description="Options of this node; unset fields come from `spec.defaults`."
    )
    children: list[ChildRef] = Field(
        default_factory=list,
        description="Nodes that must finish before this one runs: each is the name of a node "
        "defined anywhere in the flow, or an inline node (BullMQ's nested style).",
    )
    for_each: ForEach | None = Field(
        None,
        description="Run this node once per item (a map): the items become nodes "
        "`<name>[0]`, `<name>[1]`, ... when this node's children are done, added by the "
        "operator in bounded chunks. `data` must then be an object (or unset).",
    )
    when: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_WHEN_LENGTH)] | None = (
        Field(
            None,
            description="Run the node only if this CEL expression is true once its children "
            "are done; else it is `skipped` and its parents go on as for an ignored child. It "
            "sees `values` (child name to value; a forEach child's value is the list), "
            "`outcomes` (child name to completed, ignored, removed, failed or skipped) and "
            "`data`, e.g. `values['check'].ok && outcomes['load'] == 'completed'`.",
        ))

    @field_validator("data")
    @classmethod
    def _small_json(cls, value: Any) -> Any:
        if value is None or isinstance(value, bool | int):
            return value
        if nested_deeper_than(value, MAX_NESTING):
            raise PydanticCustomError(
                "data_too_deep", f"is nested deeper than {MAX_NESTING} levels; {NESTING_FIX}")
        try:
            size = _json_size(value)
        except (TypeError, ValueError) as exc:
            raise PydanticCustomError(
                "data_not_json",
                "must be plain JSON (mappings, lists, strings, numbers, booleans, null): {error}",
                {"error": str(exc)},
            ) from exc
        if size > MAX_DATA_BYTES:
            size_text, limit_text = _sizes_text(size, MAX_DATA_BYTES)
            raise PydanticCustomError(
                "data_too_large",
                "is {size} serialised as JSON, over the limit of {limit} per node: the Flow "
                "is stored in etcd, which caps an object at 1.5 MB; put the payload in object "
                "storage and pass a reference to it (a URL or key) in data instead",
                {"size": size_text, "limit": limit_text},
            )
        return value

    @model_validator(mode="after")
    def _map_data_is_an_object(self) -> NodeSpec:
        if self.for_each is not None and self.data is not None and not isinstance(self.data,
                                                                                  dict):
            raise PydanticCustomError(
                "for_each_data",
                "data of a node with forEach must be an object (or unset): each item's data "
                "is that object with the item added as data.item and its position as "
                "data.index")
        return self

    def child_names(self) -> list[str]:
        """Names of the children, whether referenced by name or defined inline."""
        names: list[str] = []
        for child in self.children:
            if isinstance(child, str):
                names.append(child)
            elif isinstance(child, NodeSpec):
                names.append(child.name)
            else:
                name = child.get("name")
                names.append(name if isinstance(name, str) else "")
        return names


class SecretKeyRef(_Spec):
    """A key of a Secret in the Flow's namespace."""

    name: ObjectName = Field(description="Name of the Secret, in the Flow's namespace.")
    key: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_NAME_LENGTH,
                                        pattern=SECRET_KEY_PATTERN)] = Field(
        "url", description="The key whose value is used; `url` when unset."
    )


class Webhook(_Spec):
    """An HTTP(S) endpoint that gets a CloudEvent when the flow finishes."""

    secret_key_ref: SecretKeyRef = Field(
        description="Where the URL is: a Secret's key (URLs often carry a token, so the Flow "
        "never carries one). Read when the notification is sent.",
    )


class Notify(_Spec):
    """Who hears about the flow's end."""

    webhook: Webhook = Field(
        description="POSTed one CloudEvents 1.0 JSON (`application/cloudevents+json`) when the "
        "flow reaches Succeeded, Failed or Cancelled: type `dev.kflow.flow.succeeded` (or "
        "`.failed`, `.cancelled`), data with the phase, counts, times and first failures. "
        "Retried with backoff, and again by a restarted operator, until the receiver answers "
        "2xx; the id is the same on every try, for the receiver to drop duplicates.",
    )


_IMMUTABLE = ("only spec.suspend, spec.cancel and spec.changePolicy may change after creation "
              "unless spec.changePolicy is Queue or Restart (a changed spec then starts a new "
              "run); create a new Flow, or set spec.changePolicy")
# The fields whose change starts a new run (under changePolicy Queue or Restart) or is refused
# (Reject): everything that shapes what runs.
RUN_FIELDS = ("nodes", "templateRef", "defaults", "ttlSecondsAfterFinished", "notify", "onExit")

ChangePolicy = Literal["Reject", "Queue", "Restart"]


def _unchanged_rule(field: str) -> JsonDict:
    """A CEL rule: `field` keeps its value unless the (new) changePolicy lets a change start a
    new run."""
    return {
        "rule": "(has(self.changePolicy) && self.changePolicy != 'Reject') || "
        f"(has(self.{field}) == has(oldSelf.{field}) && "
        f"(!has(self.{field}) || self.{field} == oldSelf.{field}))",
        "message": f"spec.{field} is immutable: {_IMMUTABLE}",
        "fieldPath": f".{field}",
    }


# A FlowTemplate's parameter names: what `{{ params.NAME }}` may say.
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PATTERN_RULES[PARAMETER_NAME_PATTERN] = (
    "be a parameter name: letters, digits and '_', not starting with a digit"
)
ParameterName = Annotated[
    str, Strict(), Field(min_length=1, max_length=63, pattern=PARAMETER_NAME_PATTERN)
]
ParameterType = Literal["string", "integer", "number", "boolean", "array", "object"]


class TemplateRef(_Spec):
    """Which FlowTemplate a Flow is made from, and the values of its parameters."""

    name: ObjectName = Field(description="Name of the FlowTemplate, in the Flow's namespace.")
    # The CRD cannot say "any JSON under names of this pattern" (structural schemas have no
    # patternProperties): the names and values are checked by the webhook and the operator.
    parameters: Annotated[
        dict[ParameterName, Any],
        WithJsonSchema({"type": "object", "maxProperties": 64,
                        "x-kubernetes-preserve-unknown-fields": True,
                        "x-kflow-type": "map of parameter name to any JSON"}),
    ] = Field(
        default_factory=dict,
        description="Values of the template's parameters, by name; a parameter with a default "
        "may be left out. Each is checked against the parameter's type and enum.",
    )


class FlowSpec(_Spec):
    """What to run: the nodes of the DAG, or the FlowTemplate they come from."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.nodes) != has(self.templateRef)",
                    "message": "a Flow has either spec.nodes or spec.templateRef, not both "
                    "and not neither",
                },
                *[_unchanged_rule(field) for field in RUN_FIELDS],
                {
                    "rule": "!has(oldSelf.cancel) || !oldSelf.cancel || "
                    "(has(self.cancel) && self.cancel)",
                    "message": "spec.cancel cannot be undone: a cancelled flow stays cancelled",
                    "fieldPath": ".cancel",
                },
            ]
        }
    )

    nodes: list[NodeSpec] = Field(
        default_factory=list,
        description="The nodes of the flow (or `templateRef`). A node that is nobody's child "
        "is a root; the flow succeeds when every root has completed and no other node is "
        "still running or queued. A Flow stored in Kubernetes is bounded by its size: about "
        "3,400 typical nodes (256 KiB) with `kubectl apply`, about 20,000 (1.5 MiB) with "
        f"`kubectl create`; the schema also caps top-level nodes at {MAX_NODES_PER_OBJECT:,}.",
        json_schema_extra={
            # Only the CRD caps the list: the apiserver must bound the cost of the CEL rules on
            # each node, and etcd's 1.5 MB object limit allows fewer nodes anyway. Local runs
            # (no etcd) take any number.
            "minItems": 1,
            "maxItems": MAX_NODES_PER_OBJECT,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    template_ref: TemplateRef | None = Field(
        None,
        description="Make the nodes from a FlowTemplate instead of listing them: the "
        "template's nodes with its parameters put into their `data`. The template is read "
        "once, when the run is recorded, and pinned in `status.template`: a later change of "
        "the template never changes this run.",
    )
    defaults: NodeOpts | None = Field(
        None, description="Options every node inherits unless its own `opts` sets them "
        "(with `templateRef`: set field by field over the template's `defaults`)."
    )
    change_policy: ChangePolicy | None = Field(
        None,
        description="What a changed spec does (nodes, templateRef, defaults, "
        "ttlSecondsAfterFinished, notify): `Reject` (the default) refuses the change; "
        "`Queue` lets the running run finish, then runs the new spec; `Restart` cancels the "
        "running run and runs the new spec at once. Each run is kept in `status.runs`; "
        "re-applying an unchanged spec starts nothing.",
    )
    ttl_seconds_after_finished: StrictInt | None = Field(
        None,
        ge=0,
        description="Seconds after the flow finishes before its state in Redis expires; "
        "kept until the Flow is deleted when unset.",
    )
    suspend: StrictBool = Field(
        False, description="While true no new node is dispatched; running nodes finish."
    )
    cancel: StrictBool = Field(
        False, description="Set to true to stop the flow and its running pods; cannot be undone."
    )
    notify: Notify | None = Field(
        None, description="A webhook that hears when the flow finishes (README, Notifications)."
    )
    on_exit: list[NodeSpec] = Field(
        default_factory=list,
        max_length=MAX_EXIT_NODES,
        description="Exit handlers: nodes run once the flow has ended (Succeeded, Failed or "
        "Cancelled), for notifications and clean-up. They form their own graph (their "
        "children are among them; names are unique across `nodes` and `onExit`), and each "
        "one's `data` (an object, or unset) gets `flow`: the flow's name, namespace, phase "
        "and failures. Their outcome is reported in `status.exitHandlers` and never changes "
        "the flow's phase.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )

    @model_validator(mode="after")
    def _nodes_or_template(self) -> FlowSpec:
        if bool(self.nodes) == (self.template_ref is not None):
            raise PydanticCustomError(
                "nodes_or_template",
                "a Flow needs either spec.nodes (at least one node) or spec.templateRef "
                "(a FlowTemplate's name and parameters), not both",
            )
        return self


class ObjectMeta(BaseModel):
    """The part of Kubernetes' ObjectMeta kflow reads; everything else is kept as is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class NodeCounts(_Status):
    """How many nodes of a flow are in each state."""

    waiting_children: int = Field(0, ge=0, description="Waiting for their children to finish.")
    expanding: int = Field(
        0, ge=0, description="Map nodes (`forEach`) whose items are being added.")
    deciding: int = Field(0, ge=0, description="Their condition (`when`) is being judged.")
    delayed: int = Field(0, ge=0, description="Waiting for a delay or a retry backoff to pass.")
    ready: int = Field(0, ge=0, description="Ready and queued for dispatch.")
    active: int = Field(0, ge=0, description="Running now.")
    completed: int = Field(0, ge=0, description="Finished successfully.")
    failed: int = Field(0, ge=0, description="Failed for good.")
    ignored: int = Field(0, ge=0, description="Failed under `onFailure: ignore`.")
    removed: int = Field(0, ge=0, description="Failed under `onFailure: remove`.")
    cancelled: int = Field(
        0, ge=0, description="Not run to the end because the flow failed or was cancelled first."
    )
    skipped: int = Field(0, ge=0, description="Not run: their condition (`when`) was false.")

    @classmethod
    def from_states(cls, counts: Mapping[str, int]) -> NodeCounts:
        """Build from the engine's counts keyed by node state ("waiting-children", ...)."""
        known = {name: counts.get(name.replace("_", "-"), 0) for name in cls.model_fields}
        return cls(**known)


class Condition(_Status):
    """A standard Kubernetes condition (`kubectl wait --for=condition=Complete` reads these)."""

    type: str = Field(description="`Valid`, `Complete` or `Failed`.")
    status: ConditionStatus = Field(description="`True`, `False` or `Unknown`.")
    reason: str | None = Field(None, description="One CamelCase word saying why.")
    message: str | None = Field(
        None, max_length=MAX_CONDITION_MESSAGE, description="Human-readable details."
    )
    last_transition_time: datetime | None = Field(None, description="When the status last changed.")
    observed_generation: int | None = Field(
        None, ge=0, description="The spec generation the condition was computed from."
    )


class FailedNode(_Status):
    """One of the first nodes of a flow to fail."""

    node: str = Field(description="Name of the node.")
    attempt: int = Field(ge=1, description="The attempt that failed last.")
    error: str = Field(
        max_length=MAX_FAILURE_MESSAGE,
        description=f"The error, cut to {MAX_FAILURE_MESSAGE} characters.",
    )
    time: datetime | None = Field(None, description="When it failed.")

    @field_validator("error", mode="before")
    @classmethod
    def _cut(cls, value: Any) -> Any:
        # The status stays bounded: a stack trace is cut, never allowed to fail the patch.
        if isinstance(value, str) and len(value) > MAX_FAILURE_MESSAGE:
            return value[: MAX_FAILURE_MESSAGE - 1] + "…"
        return value


class NotificationStatus(_Status):
    """What became of the flow's end notification (`spec.notify`)."""

    id: str = Field(max_length=512, description="The CloudEvent's id.")
    state: NotificationState = Field(
        description="`Delivered` (the receiver answered 2xx) or `Failed` (every try failed; "
        "see the Warning Event `NotificationFailed`)."
    )
    attempts: int = Field(ge=1, description="Tries made.")
    time: datetime | None = Field(None, description="When it was delivered or given up.")
    message: str | None = Field(
        None, max_length=MAX_FAILURE_MESSAGE, description="The last error, when it failed."
    )


MAX_RUNS_KEPT = 10


class ExitHandlersStatus(_Status):
    """How the exit handlers (`spec.onExit`) of a Flow fared; never the Flow's own outcome."""

    phase: str | None = Field(
        None, max_length=64,
        description="`Pending` until the flow ends, then Running, Succeeded or Failed "
        "(or Cancelled).")
    progress: str | None = Field(
        None, pattern=r"^[0-9]+/[0-9]+$", description="Finished exit nodes out of all, `k/n`.")
    failures: list[FailedNode] = Field(
        default_factory=list,
        max_length=MAX_FIRST_FAILURES,
        description=f"The first exit nodes to fail, at most {MAX_FIRST_FAILURES}.",
    )


class FlowRun(_Status):
    """One finished (or replaced) run of a Flow whose spec changed (`spec.changePolicy`)."""

    generation: int | None = Field(None, ge=0, description="The spec generation it ran.")
    phase: str | None = Field(None, max_length=64, description="How it ended.")
    reason: str | None = Field(
        None, max_length=64,
        description="`Finished`, or `Restarted` when a changed spec cancelled it "
        "(`changePolicy: Restart`).")
    started_at: datetime | None = Field(None, description="When its first node started.")
    finished_at: datetime | None = Field(None, description="When it ended.")
    total: int | None = Field(None, ge=0, description="Its number of nodes.")
    completed: int | None = Field(None, ge=0, description="Nodes that completed.")
    failed: int | None = Field(None, ge=0, description="Nodes that failed for good.")


class TemplateStatus(_Status):
    """The FlowTemplate a Flow's current run was made from, pinned."""

    name: str = Field(max_length=MAX_NAME_LENGTH, description="The FlowTemplate's name.")
    uid: str | None = Field(None, max_length=64, description="Its uid.")
    generation: int | None = Field(None, ge=0, description="The generation that was read.")
    spec: dict[str, Any] | None = Field(
        None,
        description="Its nodes and defaults with the parameters put in: what this run runs, "
        "kept so that a restarted operator never reads a changed template.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class FlowStatus(_Status):
    """What the operator reports; bounded whatever the flow's size (per-node state is in Redis)."""

    phase: FlowPhase | None = Field(
        None, description="Pending, Running, Succeeded, Failed, Cancelled or Suspended.",
        # "Missing" is a script's word for a flow without keys, never a phase to report.
        json_schema_extra={"enum": [str(phase) for phase in FLOW_PHASES]},
    )
    total: int | None = Field(None, ge=0, description="Number of nodes in the flow.")
    counts: NodeCounts | None = Field(None, description="Number of nodes in each state.")
    progress: str | None = Field(
        None,
        pattern=r"^[0-9]+/[0-9]+$",
        description="Finished nodes out of all nodes, as `k/n`.",
    )
    started_at: datetime | None = Field(None, description="When the first node started.")
    finished_at: datetime | None = Field(None, description="When the flow reached its final phase.")
    recorded_at: datetime | None = Field(
        None,
        description="When the operator recorded the graph in Redis (before any node could "
        "start). A Flow with it, or a finished one, is never recorded again: if Redis loses "
        "its state, the flow gets the `StateLost` condition instead of running again.",
    )
    duration: str | None = Field(
        None,
        max_length=64,
        description="Time from start to finish (or to the last status update while running), "
        "like `1m30s`.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=12,
        description="`Valid`, `Complete` and `Failed` conditions; `QueueMissing` while a "
        "node's Queue does not exist; `StateLost` when Redis lost the state of a flow that had "
        "not finished (annotate `kflow.dev/retry` to start it over); and `Ready`, "
        "`Reconciling` and `Stalled`, the convention GitOps tools read (kstatus): Ready once "
        "the run succeeded, Reconciling while it runs, Stalled when it failed, was cancelled, "
        "is invalid or lost its state.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    first_failures: list[FailedNode] = Field(
        default_factory=list,
        max_length=MAX_FIRST_FAILURES,
        description=f"The first nodes to fail, at most {MAX_FIRST_FAILURES}.",
    )
    notification: NotificationStatus | None = Field(
        None, description="The end notification of `spec.notify`, once sent or given up."
    )
    observed_generation: int | None = Field(
        None, ge=0, description="The spec generation this status describes."
    )
    run_generation: int | None = Field(
        None, ge=0,
        description="The spec generation the current run executes (a later one that only "
        "suspended or cancelled it starts no run).",
    )
    spec_digest: str | None = Field(
        None, max_length=128,
        description="Digest of the part of the spec the current run executes; a spec whose "
        "digest differs starts a new run under `changePolicy` Queue or Restart.",
    )
    runs: list[FlowRun] = Field(
        default_factory=list,
        max_length=MAX_RUNS_KEPT,
        description=f"Earlier runs of this Flow (its spec changed), newest last, at most "
        f"{MAX_RUNS_KEPT}.",
    )
    template: TemplateStatus | None = Field(
        None, description="The FlowTemplate generation the current run was made from."
    )
    exit_handlers: ExitHandlersStatus | None = Field(
        None, description="The exit handlers' (`spec.onExit`) phase, progress and failures."
    )


def object_ref(kind: str, metadata: ObjectMeta) -> str:
    """`Flow etl/orders-7`: how messages name an object (generateName when no name yet)."""
    name = metadata.name or metadata.generate_name or "<unnamed>"
    return f"{kind} {metadata.namespace or 'default'}/{name}"


# A path deeper than this is shown with its middle elided: a 100,000-deep inline chain must
# not make every message (or the walk itself) quadratic.
MAX_PATH_LEVELS = 6


class _Placed(Protocol):
    """Where a node of spec.nodes stands: its parent chain (inline children), its position."""

    @property
    def parent(self) -> _Placed | None: ...
    index: int
    top: int
    depth: int


def node_path(node: _Placed) -> str:
    """`spec.nodes[0].children[2]` of a placed node, rendered from its parent chain; a deep
    path keeps its start and its last MAX_PATH_LEVELS levels."""
    tail: list[int] = []
    current: _Placed | None = node
    while current is not None and current.parent is not None and len(tail) < MAX_PATH_LEVELS:
        tail.append(current.index)
        current = current.parent
    text = f"spec.nodes[{node.top}]"
    hidden = node.depth - len(tail)
    if hidden > 0:
        text += f".children[...{hidden} levels...]"
    return text + "".join(f".children[{index}]" for index in reversed(tail))


class LocatedNode:
    """A node of a flow with where it is written and the names of its children.

    The path is rendered on demand from the parent chain, never stored: storing it would cost
    O(depth) per node, so O(n^2) for a deep inline chain.
    """

    __slots__ = ("children", "depth", "index", "node", "parent", "top")

    def __init__(
        self,
        node: NodeSpec,
        parent: LocatedNode | None,
        index: int,
        children: tuple[tuple[str, int], ...],
    ) -> None:
        self.node = node
        self.parent = parent  # the node that defines this one inline, if any
        self.index = index  # position in spec.nodes, or in the parent's children
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.top: int = index if parent is None else parent.top
        self.children = children  # (child name, index of its entry in node.children)

    @property
    def path(self) -> str:
        """`spec.nodes[0].children[2]`; deep paths keep their start and their last levels."""
        return node_path(self)

    def child_path(self, entry: int) -> str:
        """Where the link to a child is written; entry -1 is the node's `forEach.from`."""
        if entry < 0:
            return f"{self.path}.forEach.from"
        return f"{self.path}.children[{entry}]"

    def __repr__(self) -> str:
        return f"LocatedNode({self.node.name!r} at {self.path})"


class Flow(BaseModel):
    """A DAG of nodes run by kflow."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["kflow.dev/v1alpha1"] = Field(
        "kflow.dev/v1alpha1", description="`kflow.dev/v1alpha1`."
    )
    kind: Literal["Flow"] = Field("Flow", description="`Flow`.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard object metadata."
    )
    spec: FlowSpec = Field(description="The DAG to run.")
    status: FlowStatus | None = Field(None, description="Reported by the operator.")

    _located: list[LocatedNode] | None = PrivateAttr(default=None)

    @property
    def object_ref(self) -> str:
        return object_ref("Flow", self.metadata)

    def located_nodes(self) -> list[LocatedNode]:
        """Every node, top-level and inline, in document order (depth first), validated.

        Inline children are validated here, one level at a time with an explicit stack, so a
        deeply nested flow cannot exhaust Python's recursion limit. Raises SpecError (all the
        problems at once). The result is cached: treat a Flow as read-only once parsed.
        """
        if self._located is None:
            # The walk allocates a few acyclic objects per node; with the cyclic collector
            # running, its passes over the growing heap would cost about as much again.
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                located, errors = _walk_nodes(self)
            finally:
                if was_enabled:
                    gc.enable()
            if errors:
                raise combine(errors)
            self._located = located
        return self._located


def _walk_nodes(flow: Flow) -> tuple[list[LocatedNode], list[SpecError]]:
    ref = flow.object_ref
    located: list[LocatedNode] = []
    errors: list[SpecError] = []
    stack: list[tuple[NodeSpec, LocatedNode | None, int]] = [
        (node, None, index) for index, node in enumerate(flow.spec.nodes)
    ]
    stack.reverse()
    while stack:
        node, parent, position = stack.pop()
        children: list[tuple[str, int]] = []
        inline: list[tuple[NodeSpec, int]] = []
        for entry, child in enumerate(node.children):
            if isinstance(child, str):
                children.append((child, entry))
                continue
            if isinstance(child, NodeSpec):
                spec = child
            else:
                try:
                    spec = NodeSpec.model_validate(child)
                except ValidationError as exc:
                    here = LocatedNode(node, parent, position, ())
                    raw_name = child.get("name")
                    errors.extend(
                        from_validation_error(
                            exc,
                            ref,
                            prefix=here.child_path(entry),
                            root_input=child,
                            base_node=raw_name if isinstance(raw_name, str) else None,
                            known_fields=SPEC_FIELD_NAMES,
                        )
                    )
                    continue
            children.append((spec.name, entry))
            inline.append((spec, entry))
        item = LocatedNode(node, parent, position, tuple(children))
        located.append(item)
        stack.extend((spec, item, entry) for spec, entry in reversed(inline))
    return located, errors


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,),
}


def parameter_type_error(type_: str, value: Any) -> str | None:
    """Why `value` is not of the parameter type `type_` (None when it is)."""
    if isinstance(value, bool) and type_ != "boolean":
        return f"is a boolean, not {'an' if type_[0] in 'aeiou' else 'a'} {type_}"
    if isinstance(value, _JSON_TYPES[type_]):
        return None
    return f"is {_shown_json(value)}, not {'an' if type_[0] in 'aeiou' else 'a'} {type_}"


def _shown_json(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class TemplateParameter(_Spec):
    """One parameter of a FlowTemplate."""

    name: ParameterName = Field(
        description="How nodes' `data` refer to it: `{{ params.NAME }}`.")
    type: ParameterType = Field(
        "string", description="`string` (the default), `integer`, `number`, `boolean`, "
        "`array` or `object`: a Flow's value of another type is refused.")
    default: Annotated[Any, WithJsonSchema(_ANY_JSON_SCHEMA)] = Field(
        None, description="The value when a Flow leaves it out; without one the parameter "
        "is required.")
    enum: list[Annotated[Any, WithJsonSchema(_ANY_JSON_SCHEMA)]] | None = Field(
        None, min_length=1, max_length=256, description="The only values allowed.")
    description: str | None = Field(None, max_length=1024, description="What it is for.")

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set or self.default is None

    @model_validator(mode="after")
    def _consistent(self) -> TemplateParameter:
        for value in self.enum or []:
            if (why := parameter_type_error(self.type, value)) is not None:
                raise PydanticCustomError(
                    "enum_type", "enum value {value} {why}: give enum values of the "
                    "parameter's type", {"value": _shown_json(value), "why": why})
        if not self.required:
            if (why := parameter_type_error(self.type, self.default)) is not None:
                raise PydanticCustomError(
                    "default_type", "default {why}: give a default of the parameter's type",
                    {"why": why})
            if self.enum is not None and self.default not in self.enum:
                raise PydanticCustomError(
                    "default_enum", "default {value} is not one of its enum values",
                    {"value": _shown_json(self.default)})
        return self


class FlowTemplateSpec(_Spec):
    """A reusable graph: nodes whose `data` may say `{{ params.NAME }}`, and the parameters."""

    parameters: list[TemplateParameter] = Field(
        default_factory=list,
        max_length=64,
        description="The parameters a Flow gives (`spec.templateRef.parameters`). They are "
        "put into nodes' `data` only, never into names, queues, children or options: a "
        "parameter cannot change the graph's shape.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    nodes: list[NodeSpec] = Field(
        min_length=1,
        description="The nodes, as in a Flow's `spec.nodes`. In `data`, a string that is "
        "exactly `{{ params.NAME }}` becomes the parameter's value (of its type); inside "
        "longer text the value is written into the string.",
        json_schema_extra={
            "maxItems": MAX_NODES_PER_OBJECT,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    defaults: NodeOpts | None = Field(
        None, description="Options every node inherits, as in a Flow's `spec.defaults`."
    )
    on_exit: list[NodeSpec] = Field(
        default_factory=list,
        max_length=MAX_EXIT_NODES,
        description="Exit handlers, as in a Flow's `spec.onExit`; `{{ params.NAME }}` in "
        "their `data` as in `nodes`.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )


class FlowTemplateStatus(_Status):
    """What the operator reports of a FlowTemplate."""

    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="`Valid`, and `Ready`/`Stalled` (the kstatus convention) with it.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    observed_generation: int | None = Field(
        None, ge=0, description="The spec generation the conditions are about."
    )


class FlowTemplate(BaseModel):
    """A reusable, parameterised graph; Flows refer to it with `spec.templateRef`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["kflow.dev/v1alpha1"] = Field(
        "kflow.dev/v1alpha1", description="`kflow.dev/v1alpha1`."
    )
    kind: Literal["FlowTemplate"] = Field("FlowTemplate", description="`FlowTemplate`.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard object metadata."
    )
    spec: FlowTemplateSpec = Field(description="The graph and its parameters.")
    status: FlowTemplateStatus | None = Field(None, description="Reported by the operator.")

    @property
    def object_ref(self) -> str:
        return object_ref("FlowTemplate", self.metadata)


class RateLimit(_Spec):
    """At most `max` nodes of the queue start per `per`."""

    max: StrictInt = Field(ge=1, description="Nodes that may start within one window.")
    per: Duration = Field(description="Length of the window, like `1m` or `1s`.")

    @field_validator("per")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value == 0:
            raise PydanticCustomError("per_zero", "must be longer than 0, like 1s or 1m")
        return value


class Workers(_Spec):
    """The autoscaled pool of worker pods of a queue in `Worker` mode."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.min) || self.min <= self.max",
                    "message": "workers.min must not exceed workers.max",
                    "fieldPath": ".min",
                }
            ]
        }
    )

    min: StrictInt = Field(0, ge=0, description="Worker pods kept even when the queue is empty.")
    max: StrictInt = Field(ge=1, description="Most worker pods at once.")
    nodes_per_worker: StrictInt = Field(
        1, ge=1, description="Nodes one worker pod runs at the same time."
    )
    idle_seconds: StrictInt = Field(
        60, ge=0, description="Seconds a worker pod may sit idle before it is scaled away."
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Workers:
        if self.min > self.max:
            raise PydanticCustomError(
                "workers_min_above_max",
                "workers.min ({min}) is larger than workers.max ({max}); lower min or raise max",
                {"min": self.min, "max": self.max},
            )
        return self


class QueueSpec(_Spec):
    """How the nodes of one queue run."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.mode) || self.mode != 'Worker' || has(self.workers)",
                    "message": "mode Worker needs spec.workers (at least max), the pool to scale",
                    "fieldPath": ".workers",
                    "reason": "FieldValueRequired",
                }
            ]
        }
    )

    mode: QueueMode = Field(
        "Job",
        description="`Job`: one Kubernetes Job per node attempt; `Worker`: an autoscaled pool "
        "of long-lived worker pods takes the nodes.",
    )
    concurrency: StrictInt | None = Field(
        None, ge=1, description="Most nodes of this queue running at once; unlimited when unset."
    )
    rate_limit: RateLimit | None = Field(
        None, description="At most `max` node starts per `per` (a duration); unlimited when unset."
    )
    template: Annotated[
        dict[str, Any] | None,
        WithJsonSchema(
            {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "x-kflow-type": "PodTemplateSpec",
            }
        ),
    ] = Field(
        None,
        description="Pod template (`metadata`, `spec`) of the Job pods or worker pods that "
        "run this queue's nodes; required to run on Kubernetes, ignored by `kflow run --local`.",
    )
    workers: Workers | None = Field(
        None, description="The worker pool; required in `Worker` mode, ignored in `Job` mode."
    )

    @model_validator(mode="after")
    def _workers_for_worker_mode(self) -> QueueSpec:
        if self.mode == "Worker" and self.workers is None:
            raise PydanticCustomError(
                "workers_missing",
                "mode is Worker but spec.workers is missing; add workers: {max: N} (and "
                "optionally min, nodesPerWorker, idleSeconds)",
            )
        return self


class QueueStatus(_Status):
    """Queue depth and pool size as the operator last saw them."""

    waiting: int | None = Field(None, ge=0, description="Nodes ready and waiting to start.")
    active: int | None = Field(None, ge=0, description="Nodes running now.")
    delayed: int | None = Field(None, ge=0, description="Nodes waiting for a delay or backoff.")
    workers: int | None = Field(None, ge=0, description="Worker pods running (Worker mode).")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="`Valid`: False while the Queue breaks the operator's pod policy (or its "
        "spec is invalid); then no pod is made from it and its nodes wait.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    observed_generation: int | None = Field(
        None, ge=0, description="The spec generation this status describes."
    )


class Queue(BaseModel):
    """How the nodes of one queue run; defined once per namespace and shared by flows."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["kflow.dev/v1alpha1"] = Field(
        "kflow.dev/v1alpha1", description="`kflow.dev/v1alpha1`."
    )
    kind: Literal["Queue"] = Field("Queue", description="`Queue`.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard object metadata."
    )
    spec: QueueSpec = Field(description="How the queue's nodes run.")
    status: QueueStatus | None = Field(None, description="Reported by the operator.")

    @property
    def object_ref(self) -> str:
        return object_ref("Queue", self.metadata)

    @property
    def queue_id(self) -> QueueId:
        """`<namespace>/<name>`, the queue's identity in the engine."""
        return QueueId(self.metadata.namespace or "default", self.metadata.name or "")


def _field_names(*models: type[BaseModel]) -> frozenset[str]:
    names: set[str] = set()
    for model in models:
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
    return frozenset(names)


# Candidates for "did you mean" when a spec carries a field kflow does not know.
SPEC_FIELD_NAMES = _field_names(
    Flow, FlowSpec, NodeSpec, NodeOpts, Backoff, Queue, QueueSpec, RateLimit, Workers,
    TemplateRef, FlowTemplate, FlowTemplateSpec, TemplateParameter,
)
