"""Map nodes (forEach) as lint, the webhook and the operator judge them, and the pure parts
the engine uses: the list at a path, each item's data, the spec packing."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.api import SpecError
from kflow.api.errors import error_lines
from kflow.graph import check_manifest
from kflow.graph.dag import MapSource
from kflow.graph.maps import MapListError, item_data, list_at
from kflow.store.codec import item_chunk, node_row, pack_spec, unpack_map, unpack_when


def flow(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"name": "files", "namespace": "etl"}, "spec": {"nodes": list(nodes)}}


def lines(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        check_manifest(doc)
    return error_lines(caught.value)


def test_a_from_node_becomes_a_dependency_of_the_map_node() -> None:
    compiled = check_manifest(flow(
        {"name": "merge", "queue": "q", "children": ["process"]},
        {"name": "process", "queue": "q", "forEach": {"from": "list", "path": "files"}},
        {"name": "list", "queue": "q"})).compiled
    assert compiled is not None
    assert compiled.nodes["process"].children == ("list",)
    assert compiled.nodes["list"].parents == ("process",)
    assert compiled.nodes["process"].for_each == MapSource(from_node="list", path=("files",))
    assert list(compiled.nodes) == ["list", "process", "merge"]  # children first
    # Listing the from node as a child too is the same single edge.
    again = check_manifest(flow(
        {"name": "process", "queue": "q", "children": ["list"], "forEach": {"from": "list"}},
        {"name": "list", "queue": "q"})).compiled
    assert again is not None and again.nodes["process"].children == ("list",)


@pytest.mark.parametrize(("node", "expected"), [
    ({"forEach": {"from": "lists"}},
     'Flow etl/files: node "process" runs forEach over the value of node "lists", which no '
     'node defines (did you mean "list"?) (field spec.nodes[0].forEach.from)'),
    ({"forEach": {"from": "process"}},
     'node "process" runs forEach over its own value; name the node that returns the list '
     "(field spec.nodes[0].forEach.from)"),
    ({"forEach": {"count": 3, "items": [1]}},
     "spec.nodes[0].forEach: sets items and count; set exactly one of from"),
    ({"forEach": {}}, "spec.nodes[0].forEach: sets none of them; set exactly one of from"),
    ({"forEach": {"count": 3, "path": "files"}},
     "spec.nodes[0].forEach: sets path without from; path reads into the value of the from "
     "node"),
    ({"forEach": {"count": 3}, "data": ["not", "an", "object"]},
     "data of a node with forEach must be an object (or unset): each item's data is that "
     "object with the item added as data.item"),
    ({"forEach": {"count": 1_000_001}}, "spec.nodes[0].forEach.count must be at most 1000000"),
    ({"forEach": {"from": "list", "path": "a..b"}}, "spec.nodes[0].forEach.path"),
])
def test_a_malformed_for_each_is_refused_naming_the_node_and_field(
        node: dict[str, Any], expected: str) -> None:
    found = lines(flow({"name": "process", "queue": "q", **node}, {"name": "list", "queue": "q"}))
    assert any(expected in line for line in found), found
    assert all('node "process"' in line for line in found), found


def test_a_cycle_through_for_each_from_is_named_at_the_from_field() -> None:
    found = lines(flow(
        {"name": "a", "queue": "q", "forEach": {"from": "b"}},
        {"name": "b", "queue": "q", "children": ["a"]}))
    assert any('the nodes form a cycle: "a" -> "b" -> "a"' in line or
               'the nodes form a cycle: "b" -> "a" -> "b"' in line for line in found), found
    assert any("forEach.from" in line or "children[0]" in line for line in found), found


def test_the_list_is_found_at_its_path_with_keys_and_list_indexes() -> None:
    source = MapSource(from_node="list", path=("result", "0", "files"))
    assert list_at("m", source, {"result": [{"files": [1, 2]}]}) == [1, 2]
    assert list_at("m", MapSource(from_node="list"), ["a"]) == ["a"]
    with pytest.raises(MapListError, match=r'node "list" returned no "0" at result, which is '
                                           r"an object \(its keys: x\)"):
        list_at("m", source, {"result": {"x": 1}})
    with pytest.raises(MapListError, match=r"returned null at path result\.0\.files, not a list"):
        list_at("m", source, {"result": [{"files": None}]})


def test_each_item_gets_the_map_nodes_data_with_item_and_index() -> None:
    assert item_data({"bucket": "b"}, "f.csv", 3) == {"bucket": "b", "item": "f.csv", "index": 3}
    assert item_data(None, {"k": 1}, 0) == {"item": {"k": 1}, "index": 0}
    chunk = item_chunk({"x": 1}, ["a", "b", "c", "d"], 1, 2, 10_000)
    assert chunk == ['{"x":1,"item":"b","index":1}', '{"x":1,"item":"c","index":2}']
    assert len(item_chunk(None, ["y" * 600] * 10, 0, 10, 1_000)) == 1  # bounded by bytes


def test_a_map_node_packs_its_source_and_a_leaf_map_starts_expanding() -> None:
    compiled = check_manifest(flow(
        {"name": "sq", "queue": "q", "forEach": {"count": 5}})).compiled
    assert compiled is not None
    row = node_row(compiled.nodes["sq"])
    assert row[4] == "x"
    assert unpack_map(row[1]) == MapSource(count=5)
    node = compiled.nodes["sq"]
    assert unpack_map(pack_spec(node.queue, node.opts)) is None
    items = MapSource(items=("a", None))
    assert unpack_map(pack_spec("q", node.opts, items)) == items
    source = MapSource(from_node="l", path=("a", "b"))
    assert unpack_map(pack_spec("q", node.opts, source)) == source


def test_a_condition_that_does_not_compile_is_refused_at_the_when_field() -> None:
    found = lines(flow({"name": "publish", "queue": "q", "when": "values[ == 1"}))
    assert len(found) == 1, found
    assert found[0].startswith('Flow etl/files: node "publish": when: "values[ == 1" does not '
                               "compile:"), found
    assert "spec.nodes[0].when" in found[0]
    compiled = check_manifest(flow(
        {"name": "publish", "queue": "q", "when": 'outcomes["c"] == "completed"',
         "children": ["c"]}, {"name": "c", "queue": "q"})).compiled
    assert compiled is not None
    assert compiled.nodes["publish"].when == 'outcomes["c"] == "completed"'
    row = node_row(compiled.nodes["publish"])
    assert unpack_map(row[1]) is None and unpack_when(row[1]) == 'outcomes["c"] == "completed"'
    leaf = check_manifest(flow({"name": "leaf", "queue": "q", "when": "true"})).compiled
    assert leaf is not None and node_row(leaf.nodes["leaf"])[4] == "w"
