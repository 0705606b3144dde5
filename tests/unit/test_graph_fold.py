"""Folding a flow's DAG for drawing: alike siblings become one group box."""

from __future__ import annotations

import pytest

from kflow.graph.fold import GROUP_MEMBERS_SHOWN, GraphNode, fold, group_state


def fan_out(width: int, *, queue: str = "work", failed: int = -1) -> list[GraphNode]:
    leaves = [GraphNode(f"leaf-{i:05d}", queue, "failed" if i == failed else "completed")
              for i in range(width)]
    return [GraphNode("sum", "agg", "waiting-children", [n.name for n in leaves]), *leaves]


def test_a_wide_fan_out_is_one_group_with_its_counts() -> None:
    graph = fold(fan_out(10_000, failed=7), collapse=20)

    assert [n.id for n in graph.nodes] == ["group:leaf-00000", "sum"]
    group = graph.nodes[0]
    assert group.group is not None
    assert group.group.count == 10_000
    assert group.group.counts == {"completed": 9_999, "failed": 1}
    assert group.state == "failed"  # one failure among thousands shows
    assert len(group.group.members) == GROUP_MEMBERS_SHOWN
    assert graph.edges == [("group:leaf-00000", "sum")]


def test_siblings_fold_only_when_more_than_collapse_and_alike() -> None:
    assert all(n.group is None for n in fold(fan_out(20), collapse=20).nodes)
    assert len(fold(fan_out(21), collapse=20).nodes) == 2
    assert len(fold(fan_out(500), collapse=0).nodes) == 501  # 0: never fold

    # Another queue, or another child, makes a sibling unlike the rest: it stays apart.
    nodes = fan_out(30)
    nodes[1] = GraphNode(nodes[1].name, "other", "ready")
    nodes.append(GraphNode("extra", "work", "ready"))
    nodes[2] = GraphNode(nodes[2].name, "work", "ready", ["extra"])
    drawn = fold(nodes, collapse=20)
    singles = sorted(n.id for n in drawn.nodes if n.group is None)
    assert singles == ["extra", "leaf-00000", "leaf-00001", "sum"]
    assert ("extra", "leaf-00001") in drawn.edges
    assert ("leaf-00001", "sum") in drawn.edges and ("group:leaf-00002", "sum") in drawn.edges


def test_a_diamond_keeps_every_edge_between_drawn_nodes() -> None:
    nodes = [GraphNode("top", "q", "waiting-children", ["left", "right"]),
             GraphNode("left", "q", "waiting-children", ["base"]),
             GraphNode("right", "q", "waiting-children", ["base"]),
             GraphNode("base", "q", "ready")]
    graph = fold(nodes, collapse=1)

    # left and right share parents, children and queue: two is more than collapse=1.
    assert [n.id for n in graph.nodes] == ["base", "group:left", "top"]
    assert graph.edges == [("base", "group:left"), ("group:left", "top")]


def test_group_state_and_bad_collapse() -> None:
    assert group_state(["completed", "active", "ready"]) == "active"
    assert group_state(["completed"]) == "completed"
    with pytest.raises(ValueError, match="collapse"):
        fold([], collapse=-1)
