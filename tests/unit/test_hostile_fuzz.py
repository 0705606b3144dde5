"""Random and mutated manifests through the entry points lint, the webhook and the operator use:
every input gets a verdict or a SpecError, never any other exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kflow.api import SpecError
from kflow.api.errors import error_lines
from kflow.api.manifests import read_documents
from kflow.graph import check_manifest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
EXAMPLE_TEXTS = [path.read_bytes() for path in EXAMPLES]
EXAMPLE_DOCS = [doc for path in EXAMPLES for doc in read_documents(path)[0]]
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FIELD_NAMES = ["name", "queue", "data", "opts", "children", "attempts", "backoff", "delay",
               "timeout", "priority", "onFailure", "failParentOnFailure", "type", "maxDelay",
               "jitter", "mode", "workers", "min", "max", "template", "rateLimit", "per",
               "nodes", "defaults", "suspend", "cancel", "ttlSecondsAfterFinished", "lifo"]
scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats() | st.text(max_size=12) | st.sampled_from(FIELD_NAMES)
           | st.sampled_from(["1s", "2m", "-1", "fixed", "exponential", "Job", "Worker", "a", ""]))
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def nodes(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    node: dict[str, Any] = {"name": draw(st.sampled_from(["a", "b", "c", "Bad_Name", ""])
                                          | st.text(max_size=6)),
                            "queue": draw(st.sampled_from(["q", "work", "Bad_Q"]) | json_values)}
    extra = draw(st.dictionaries(keys, json_values, max_size=3))
    node.update(extra)
    if depth < 3 and draw(st.booleans()):
        node["children"] = draw(st.lists(
            st.sampled_from(["a", "b", "c", "missing"]) | nodes(depth + 1) | json_values,
            max_size=3))
    return node


@st.composite
def manifests(draw: st.DrawFn) -> Any:
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(json_values)  # not even a mapping
    kind = draw(st.sampled_from(["Flow", "Queue", "Flow", "Job"]) | json_values)
    spec: Any
    if kind == "Queue":
        spec = draw(st.dictionaries(keys, json_values, max_size=5))
    else:
        spec = {"nodes": draw(st.lists(nodes(), max_size=5)),
                **draw(st.dictionaries(keys, json_values, max_size=2))}
    return {
        "apiVersion": draw(st.sampled_from(["kflow.dev/v1alpha1"] * 4 + ["v1"]) | json_values),
        "kind": kind,
        "metadata": draw(st.fixed_dictionaries(
            {}, optional={"name": st.sampled_from(["x", "flow-1"]) | json_values,
                          "namespace": st.sampled_from(["etl"]) | json_values,
                          "labels": json_values})),
        "spec": draw(st.sampled_from([spec, spec, spec]) | json_values),
    }


def judge(doc: Any) -> None:
    """The verdict, or a SpecError whose lines can be printed; anything else fails the test."""
    try:
        check_manifest(doc)
    except SpecError as exc:
        lines = error_lines(exc)
        assert lines and all(isinstance(line, str) and line for line in lines)


def containers(value: Any) -> list[tuple[Any, ...]]:
    """Paths of the mappings and lists in `value` down to 20 levels (where a mutation lands)."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        current, path = stack.pop()
        found.append(path)
        items = current.items() if isinstance(current, dict) else enumerate(current)
        stack.extend((item, (*path, key)) for key, item in items
                     if isinstance(item, dict | list) and len(path) < 20)
    return found


@FUZZ
@given(manifests())
def test_random_manifests_get_a_verdict_or_a_spec_error(doc: Any) -> None:
    judge(doc)


@FUZZ
@given(st.sampled_from(EXAMPLE_DOCS), st.data())
def test_mutated_examples_get_a_verdict_or_a_spec_error(example: Any, data: st.DataObject) -> None:
    doc = copy.deepcopy(example)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        path = data.draw(st.sampled_from(containers(doc)))
        target = doc
        for key in path:
            target = target[key]
        replacement = data.draw(json_values | st.just(deep_list(data.draw(
            st.integers(min_value=60, max_value=3_000)))))
        if isinstance(target, dict) and target:
            key = data.draw(st.sampled_from(sorted(target, key=str)))
            if data.draw(st.booleans()):
                target[key] = replacement
            else:
                del target[key]
        elif isinstance(target, list) and target:
            target[data.draw(st.integers(min_value=0, max_value=len(target) - 1))] = replacement
        elif isinstance(target, list | dict):
            (target.append(replacement) if isinstance(target, list)
             else target.__setitem__("x", replacement))
    judge(doc)


def deep_list(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


@FUZZ
@given(st.sampled_from(EXAMPLE_TEXTS), st.data())
def test_mutated_example_bytes_get_a_verdict_or_a_spec_error(
    tmp_path_factory: pytest.TempPathFactory, text: bytes, data: st.DataObject
) -> None:
    content = bytearray(text)
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        at = data.draw(st.integers(min_value=0, max_value=len(content)))
        piece = data.draw(st.binary(max_size=4) | st.sampled_from(
            [b"&a ", b"*a", b"[", b"{", b"- ", b": ", b"\n  ", b"\xff", b"!!python/object ",
             b"---\n", b"<<: *a\n"]))
        cut = data.draw(st.integers(min_value=0, max_value=4))
        content[at:at + cut] = piece
    path = tmp_path_factory.mktemp("fuzz") / "flow.yaml"
    path.write_bytes(bytes(content))
    try:
        documents, name = read_documents(path)
    except SpecError as exc:
        assert str(path) in str(exc)
        return
    for position, document in enumerate(documents, start=1):
        try:
            check_manifest(document, source=f"{name} (document {position})")
        except SpecError as exc:
            assert error_lines(exc)
