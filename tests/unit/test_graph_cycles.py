"""Cycles the compiler must find wherever the walk enters them: from a node outside the cycle."""

from __future__ import annotations

import pytest

from kflow.graph import GraphError, GraphErrors, compile_flow
from tests.unit.test_graph_compile import make_flow, node


def cycle_messages(*nodes: dict[str, object]) -> list[str]:
    with pytest.raises(GraphError) as caught:
        compile_flow(make_flow(*nodes))
    error = caught.value
    inner = error.errors if isinstance(error, GraphErrors) else [error]
    return [e.message for e in inner]


def test_a_cycle_entered_from_a_node_outside_it_names_only_the_cycle() -> None:
    # "entry" comes first in the document, so the search starts outside the cycle.
    messages = cycle_messages(node("entry", "a"), node("a", "b"), node("b", "a"))
    assert len(messages) == 1
    assert messages[0].startswith('the nodes form a cycle: "a" -> "b" -> "a";')
    assert '"entry"' not in messages[0]


def test_a_cycle_entered_through_a_chain_and_a_diamond_is_found() -> None:
    messages = cycle_messages(
        node("top", "left", "right"), node("left", "mid"), node("right", "mid"),
        node("mid", "c1"), node("c1", "c2"), node("c2", "c3"), node("c3", "c1"),
        node("fine", "leaf"), node("leaf"),
    )
    assert len(messages) == 1
    assert messages[0].startswith('the nodes form a cycle: "c1" -> "c2" -> "c3" -> "c1";')


def test_the_closing_edge_of_an_entered_cycle_is_the_field() -> None:
    with pytest.raises(GraphError) as caught:
        compile_flow(make_flow(node("entry", "a"), node("a", "b"), node("b", "a")))
    assert caught.value.field == "spec.nodes[2].children[0]"  # b -> a closes it
