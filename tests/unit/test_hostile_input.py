"""Hostile and broken input: every reader of user input answers with a message naming the
object (or file), the node and the field, never with an uncaught exception."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from kflow.api import SpecError, manifests
from kflow.api.errors import error_lines
from kflow.api.manifests import load_manifests
from kflow.cli.local.command import EXIT_INVALID, run_local_command
from kflow.cli.main import lint_files
from kflow.graph import check_manifest
from kflow.kube.admission import refusal

LIMIT = manifests.MAX_NESTING
HANDLERS = Path(__file__).resolve().parents[2] / "examples" / "handlers.py"


def nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


def flow(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"name": "hostile", "namespace": "etl"},
            "spec": {"nodes": list(nodes)}}


def verdict_lines(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        check_manifest(doc)
    return error_lines(caught.value)


def lint(tmp_path: Path, content: bytes) -> tuple[int, str, str]:
    path = tmp_path / "flow.yaml"
    path.write_bytes(content)
    out, err = io.StringIO(), io.StringIO()
    code = lint_files([str(path)], out, err)
    return code, out.getvalue(), err.getvalue()


# --- nesting depth ----------------------------------------------------------------------


def test_data_nested_two_thousand_levels_deep_is_refused_naming_flow_node_and_field() -> None:
    doc = flow({"name": "load", "queue": "q", "data": nested(2_000)})

    lines = verdict_lines(doc)

    assert lines == [f'Flow etl/hostile: node "load": spec.nodes[0].data is nested deeper than '
                     f"{LIMIT} levels; flatten it, or pass large inputs by reference"]
    # The webhook (`kubectl apply`) answers the same.
    assert refusal("Flow", doc, None) == lines[0]


def test_data_nested_at_the_limit_is_accepted() -> None:
    doc = flow({"name": "load", "queue": "q", "data": nested(manifests.MAX_NESTING)})
    assert check_manifest(doc).compiled is not None
    too_deep = flow({"name": "load", "queue": "q", "data": nested(manifests.MAX_NESTING + 1)})
    assert "nested deeper than" in verdict_lines(too_deep)[0]


def test_deep_nesting_elsewhere_names_its_node_and_field() -> None:
    deep = nested(3_000)
    doc = flow(
        {"name": "top", "queue": "q", "children": [
            {"name": "inner", "queue": "q", "opts": {"backoff": deep}},
            [deep],
        ]},
    )
    doc["metadata"]["labels"] = deep
    doc["spec"]["defaults"] = deep

    lines = verdict_lines(doc)

    assert any(line.startswith("Flow etl/hostile: metadata.labels is nested deeper than")
               for line in lines), lines
    assert any(line.startswith("Flow etl/hostile: spec.defaults is nested deeper than")
               for line in lines), lines
    assert any(line.startswith('Flow etl/hostile: node "inner": '
                               "spec.nodes[0].children[0].opts is nested deeper than")
               for line in lines), lines
    assert any(line.startswith('Flow etl/hostile: node "top": '
                               "spec.nodes[0].children[1] is nested deeper than")
               for line in lines), lines


def test_a_queue_template_nested_too_deep_is_refused() -> None:
    doc = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue",
           "metadata": {"name": "work", "namespace": "etl"},
           "spec": {"template": nested(5_000)}}
    assert refusal("Queue", doc, None) == (
        f"Queue etl/work: spec.template is nested deeper than {LIMIT} levels; flatten it, or "
        "pass large inputs by reference")


def test_deep_inline_children_are_still_not_a_nesting_problem() -> None:
    # Inline children are nodes, not data: a long inline chain is a supported way to write a
    # flow, and each node's own fields are measured from that node.
    inner: dict[str, Any] = {"name": "d299", "queue": "q", "data": nested(10)}
    for i in range(298, -1, -1):
        inner = {"name": f"d{i}", "queue": "q", "data": nested(10), "children": [inner]}
    verdict = check_manifest(flow(inner))
    assert verdict.compiled is not None and len(verdict.compiled.nodes) == 300


# --- YAML aliases -----------------------------------------------------------------------


def laughs(levels: int) -> bytes:
    """Each anchor is a list of nine aliases of the one before: 9**levels strings."""
    lines = ["apiVersion: kflow.dev/v1alpha1", "kind: Flow", "metadata: {name: lol}",
             "x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"spec: {{nodes: [{{name: n, queue: q, data: *a{levels - 1}}}]}}")
    return ("\n".join(lines) + "\n").encode()


def test_a_yaml_alias_bomb_is_refused_naming_the_file(tmp_path: Path) -> None:
    code, out, err = lint(tmp_path, laughs(7))

    assert code == 1 and out == ""
    assert err.startswith(f"{tmp_path / 'flow.yaml'}: line ")
    assert "aliases" in err and f"{manifests.MAX_ALIAS_NODES:,}" in err
    assert "spec.defaults" in err  # the fix for options many nodes share


def test_a_recursive_yaml_alias_is_refused(tmp_path: Path) -> None:
    code, _, err = lint(tmp_path, b"apiVersion: kflow.dev/v1alpha1\nkind: Flow\n"
                                  b"metadata: &m {name: loop, labels: *m}\n"
                                  b"spec: {nodes: [{name: n, queue: q}]}\n")
    assert code == 1
    assert "refers to the value it is in" in err, err


def test_a_few_aliases_of_shared_options_are_fine(tmp_path: Path) -> None:
    nodes = "\n".join(f"  - {{name: n{i}, queue: q, opts: *opts}}" for i in range(200))
    text = ("apiVersion: kflow.dev/v1alpha1\nkind: Flow\nmetadata: {name: shared}\n"
            "x-opts: &opts {attempts: 3, backoff: {type: exponential, delay: 1s}}\n"
            f"spec:\n  nodes:\n{nodes}\n")
    code, out, err = lint(tmp_path, text.encode())
    assert code == 0, err
    assert "ok (200 nodes, 1 queues)" in out


# --- size and encoding ------------------------------------------------------------------


def test_a_file_over_the_size_bound_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    filler = b"# " + b"x" * 98 + b"\n"
    lines = manifests.MAX_MANIFEST_BYTES // len(filler) + 1
    content = b"apiVersion: kflow.dev/v1alpha1\n" + filler * lines

    code, _, err = lint(tmp_path, content)

    assert code == 1
    assert f"{tmp_path / 'flow.yaml'}: is larger than 3 MiB" in err, err


def test_non_utf8_bytes_are_named_with_their_file_and_byte_offset(tmp_path: Path) -> None:
    content = b"apiVersion: kflow.dev/v1alpha1\nkind: Flow\nmetadata: {name: caf\xe9}\n"
    offset = content.index(b"\xe9")

    code, _, err = lint(tmp_path, content)

    assert code == 1
    assert f"{tmp_path / 'flow.yaml'}: is not UTF-8: byte 0xe9 at offset {offset}" in err, err


def test_run_local_reports_broken_files_instead_of_crashing(tmp_path: Path) -> None:
    for content, fragment in [
        (b"kind: Flow\nmetadata: {name: \xff}\n", "is not UTF-8"),
        (laughs(7), "aliases"),
    ]:
        path = tmp_path / "flow.yaml"
        path.write_bytes(content)
        err = io.StringIO()
        assert run_local_command(str(path), str(HANDLERS), err=err) == EXIT_INVALID
        assert err.getvalue().startswith(f"error: {path}: "), err.getvalue()
        assert fragment in err.getvalue()


def test_yaml_text_is_bounded_as_well() -> None:
    with pytest.raises(SpecError, match="is larger than 3 MiB"):
        load_manifests("a: b\n" + "#" * manifests.MAX_MANIFEST_BYTES + "\n")


# --- names ------------------------------------------------------------------------------


def test_a_queue_name_that_is_not_a_kubernetes_name_names_the_node_and_field() -> None:
    lines = verdict_lines(flow({"name": "load", "queue": "Extract_Queue"}))
    assert lines == ["Flow etl/hostile: node \"load\": spec.nodes[0].queue is 'Extract_Queue', "
                     "but it must be a Kubernetes object name: lowercase letters, digits, '-' "
                     "and '.', starting and ending with a letter or digit"]


def test_a_bad_node_name_names_the_field_and_the_rule() -> None:
    lines = verdict_lines(flow({"name": "load", "queue": "q", "children": [
        {"name": "-bad name", "queue": "q"}]}))
    assert len(lines) == 1
    assert "spec.nodes[0].children[0].name is '-bad name', but it must be letters, digits" \
        in lines[0], lines
