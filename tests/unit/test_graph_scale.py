"""Huge flows compile because the compiler never recurses (times are for benchmarks, not here)."""

from __future__ import annotations

import sys
from typing import Any

from kflow.api import Flow
from kflow.graph import compile_flow

N = 100_000


def make_flow(nodes: list[dict[str, Any]]) -> Flow:
    return Flow.model_validate({"metadata": {"name": "big"}, "spec": {"nodes": nodes}})


def test_hundred_thousand_deep_chain_by_reference() -> None:
    nodes = [
        {"name": f"n{i}", "queue": "q", "children": [f"n{i + 1}"] if i + 1 < N else []}
        for i in range(N)
    ]
    compiled = compile_flow(make_flow(nodes))
    assert compiled.roots == ("n0",) and compiled.leaves == (f"n{N - 1}",)
    order = list(compiled.nodes)
    assert order[0] == f"n{N - 1}" and order[-1] == "n0" and len(order) == N
    assert compiled.nodes["n500"].parents == ("n499",)


def test_hundred_thousand_wide_fan_out() -> None:
    nodes = [{"name": "root", "queue": "q", "children": [f"c{i}" for i in range(N)]}]
    nodes += [{"name": f"c{i}", "queue": "q"} for i in range(N)]
    compiled = compile_flow(make_flow(nodes))
    assert compiled.roots == ("root",)
    assert len(compiled.leaves) == N and len(compiled.nodes["root"].children) == N
    assert list(compiled.nodes)[-1] == "root"


def test_deep_inline_nesting_beyond_the_recursion_limit() -> None:
    depth = max(20_000, sys.getrecursionlimit() * 10)
    inner: dict[str, Any] = {"name": f"d{depth - 1}", "queue": "q"}
    for i in range(depth - 2, -1, -1):
        inner = {"name": f"d{i}", "queue": "q", "children": [inner]}
    flow = make_flow([inner])
    compiled = compile_flow(flow)
    assert compiled.roots == ("d0",) and compiled.leaves == (f"d{depth - 1}",)
    assert len(compiled.nodes) == depth
    # A message about a deep node stays short: the middle of its path is elided.
    located = flow.located_nodes()[-1]
    assert located.path.startswith("spec.nodes[0].children[...")
    assert len(located.path) < 200


def test_deep_cycle_is_found_and_named_without_recursion() -> None:
    n = 50_000
    nodes = [{"name": f"n{i}", "queue": "q", "children": [f"n{(i + 1) % n}"]} for i in range(n)]
    try:
        compile_flow(make_flow(nodes))
    except ValueError as exc:
        message = str(exc)
    else:  # pragma: no cover
        raise AssertionError("a cycle compiled")
    assert message.startswith('Flow default/big: the nodes form a cycle: "n0" -> "n1" -> ')
    # The message names the cycle's start and end, not all 50,000 nodes.
    assert f'-> ... {n + 1 - 20} more ... -> "n{n - 2}" -> "n{n - 1}" -> "n0"' in message
    assert len(message) < 1000
