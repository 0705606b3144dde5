"""The compiler: edges in both directions, defaults merged, and every bad graph named clearly."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.api import Flow
from kflow.graph import CompiledOptions, GraphError, GraphErrors, compile_flow


def make_flow(*nodes: dict[str, Any], **spec: Any) -> Flow:
    return Flow.model_validate(
        {
            "apiVersion": "kflow.dev/v1alpha1",
            "kind": "Flow",
            "metadata": {"name": "orders-7", "namespace": "etl"},
            "spec": {"nodes": list(nodes), **spec},
        }
    )


def node(name: str, *children: str | dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": name, "queue": fields.pop("queue", "q"), "children": list(children), **fields}


def graph_error(flow: Flow) -> GraphError:
    with pytest.raises(GraphError) as caught:
        compile_flow(flow)
    return caught.value


def order_workflow() -> Flow:
    return make_flow(
        node("send-confirmation", node("fulfill-order", "reserve-inventory", "prepare-shipping")),
        node("reserve-inventory", "process-payment", queue="inventory"),
        node("prepare-shipping", "process-payment", queue="shipping"),
        node(
            "process-payment",
            node("validate-items", opts={"onFailure": "ignore"}),
            node("validate-customer"),
            queue="payment",
            data={"orderId": "A-17"},
            opts={"attempts": 5, "priority": 1, "timeout": "2m"},
        ),
        defaults={
            "attempts": 3,
            "backoff": {"type": "exponential", "delay": "1s", "maxDelay": "1m"},
        },
    )


def test_diamond_compiles_with_edges_both_ways() -> None:
    compiled = compile_flow(order_workflow())
    payment = compiled.nodes["process-payment"]
    assert payment.children == ("validate-items", "validate-customer")
    assert payment.parents == ("reserve-inventory", "prepare-shipping")
    assert payment.queue == "payment" and payment.data == {"orderId": "A-17"}
    assert compiled.nodes["fulfill-order"].parents == ("send-confirmation",)
    assert compiled.nodes["fulfill-order"].children == ("reserve-inventory", "prepare-shipping")
    assert compiled.roots == ("send-confirmation",)
    assert compiled.leaves == ("validate-items", "validate-customer")
    assert compiled.queues == {"q", "inventory", "shipping", "payment"}
    # Children before parents, ties in document order.
    assert list(compiled.nodes) == [
        "validate-items",
        "validate-customer",
        "process-payment",
        "reserve-inventory",
        "prepare-shipping",
        "fulfill-order",
        "send-confirmation",
    ]


def test_defaults_are_merged_into_each_node() -> None:
    compiled = compile_flow(order_workflow())
    exponential = {
        "backoff_type": "exponential",
        "backoff_delay_ms": 1000,
        "backoff_max_delay_ms": 60_000,
    }
    assert compiled.nodes["validate-customer"].opts == CompiledOptions(attempts=3, **exponential)
    assert compiled.nodes["validate-items"].opts == CompiledOptions(
        attempts=3, on_failure="ignore", **exponential
    )
    assert compiled.nodes["process-payment"].opts == CompiledOptions(
        attempts=5, priority=1, timeout_ms=120_000, **exponential
    )


def test_lifo_is_inherited_from_the_defaults_and_a_node_can_turn_it_off() -> None:
    compiled = compile_flow(make_flow(node("a", children=["b"]), node("b", opts={"lifo": False}),
                                      defaults={"lifo": True}))
    assert compiled.nodes["a"].opts.lifo is True
    assert compiled.nodes["b"].opts.lifo is False
    assert CompiledOptions().lifo is False  # FIFO unless asked, as in BullMQ


def test_no_defaults_means_kflow_defaults() -> None:
    compiled = compile_flow(make_flow(node("a")))
    assert compiled.nodes["a"].opts == CompiledOptions()
    assert compiled.roots == compiled.leaves == ("a",)


def test_a_node_backoff_replaces_the_default_backoff_whole() -> None:
    flow = make_flow(
        node("a", opts={"backoff": "5s", "delay": "1m"}),
        defaults={
            "backoff": {"type": "exponential", "delay": "1s", "maxDelay": "1m", "jitter": 0.5},
            "onFailure": "remove",
            "delay": 10,
        },
    )
    opts = compile_flow(flow).nodes["a"].opts
    assert (opts.backoff_type, opts.backoff_delay_ms, opts.backoff_max_delay_ms) == (
        "fixed",
        5000,
        None,
    )
    assert opts.backoff_jitter == 0.0
    assert opts.on_failure == "remove" and opts.delay_ms == 60_000


def test_alias_false_overrides_an_inherited_policy() -> None:
    flow = make_flow(
        node("p", "a", "b"),
        node("a", opts={"continueParentOnFailure": False}),
        node("b"),
        defaults={"continueParentOnFailure": True},
    )
    compiled = compile_flow(flow)
    assert compiled.nodes["a"].opts.on_failure == "failParent"
    assert compiled.nodes["b"].opts.on_failure == "continueParent"


def test_unknown_child_suggests_the_close_name() -> None:
    error = graph_error(make_flow(node("load", "transfrom"), node("transform")))
    assert str(error) == (
        'Flow etl/orders-7: node "load" lists child "transfrom", which no node defines '
        '(did you mean "transform"?)'
    )
    assert error.field == "spec.nodes[0].children[0]"


def test_unknown_child_without_a_close_name() -> None:
    error = graph_error(make_flow(node("load", "zzz"), node("transform")))
    assert str(error).endswith('lists child "zzz", which no node defines')


def test_duplicate_names_even_across_inline_nesting() -> None:
    error = graph_error(make_flow(node("a", node("b", node("c"))), node("c")))
    assert (
        'node "c" is defined twice, at spec.nodes[0].children[0].children[0] and spec.nodes[1]'
        in str(error)
    )
    assert error.field == "spec.nodes[1]"


def test_self_reference() -> None:
    error = graph_error(make_flow(node("a", "b", "a"), node("b")))
    assert 'node "a" lists itself as a child (spec.nodes[0].children[1])' in str(error)


def test_same_child_twice() -> None:
    error = graph_error(make_flow(node("a", "b", "b"), node("b")))
    assert (
        'node "a" lists child "b" twice, at spec.nodes[0].children[0] and spec.nodes[0].children[1]'
        in str(error)
    )


def test_cycle_is_named_in_order() -> None:
    error = graph_error(
        make_flow(node("a", "b"), node("b", "c"), node("c", "a"), node("root", "a"))
    )
    assert str(error).startswith(
        'Flow etl/orders-7: the nodes form a cycle: "a" -> "b" -> "c" -> "a"'
    )
    assert error.field == "spec.nodes[2].children[0]"


def test_every_disjoint_cycle_is_named() -> None:
    error = graph_error(
        make_flow(node("a", "b"), node("b", "a"), node("x", "y"), node("y", node("z", "x")))
    )
    assert isinstance(error, GraphErrors)
    messages = [inner.message for inner in error.errors]
    assert any('"a" -> "b" -> "a"' in message for message in messages)
    assert any('"x" -> "y" -> "z" -> "x"' in message for message in messages)


def test_several_problems_are_reported_together() -> None:
    error = graph_error(make_flow(node("a", "nope", "a"), node("b", "missing")))
    assert isinstance(error, GraphErrors)
    assert [inner.field for inner in error.errors] == [
        "spec.nodes[0].children[0]",
        "spec.nodes[0].children[1]",
        "spec.nodes[1].children[0]",
    ]
    assert str(error).startswith("Flow etl/orders-7: 3 problems:")


def test_invalid_inline_child_is_a_graph_error_with_its_path() -> None:
    flow = make_flow(node("a", {"name": "b", "queue": "q", "opts": {"attempts": -2}}))
    error = graph_error(flow)
    assert error.field == "spec.nodes[0].children[0].opts.attempts"
    assert 'node "b"' in str(error)


def test_generate_name_identifies_an_unnamed_flow() -> None:
    flow = Flow.model_validate(
        {"metadata": {"generateName": "order-"}, "spec": {"nodes": [node("a", "b")]}}
    )
    assert str(graph_error(flow)).startswith("Flow default/order-: ")
