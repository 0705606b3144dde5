"""Property tests on random DAGs: compile keeps every edge, orders children first, finds cycles."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kflow.api import Flow
from kflow.graph import GraphError, compile_flow


@st.composite
def random_dags(draw: st.DrawFn) -> tuple[int, set[tuple[int, int]], set[int], list[int]]:
    """(node count, edges parent->child with parent < child, inline nodes, top-level order)."""
    n = draw(st.integers(min_value=1, max_value=14))
    pairs = [(p, c) for p in range(n) for c in range(p + 1, n)]
    edges = set(draw(st.lists(st.sampled_from(pairs), unique=True))) if pairs else set()
    with_parent = sorted({c for _, c in edges})
    inline = (
        set(draw(st.lists(st.sampled_from(with_parent), unique=True))) if with_parent else set()
    )
    top = [i for i in range(n) if i not in inline]
    order = draw(st.permutations(top))
    return n, edges, inline, list(order)


def build_flow(
    n: int,
    edges: set[tuple[int, int]],
    inline: set[int],
    order: list[int],
    back_edge: tuple[int, int] | None = None,
) -> Flow:
    """A Flow for the DAG: an inline node is written inside its first parent, referenced by name
    from the others; children are built before parents (higher index first). `back_edge` adds
    one more child reference by name, which may close a cycle."""
    first_parent = {c: min(p for p, cc in edges if cc == c) for c in inline}
    docs: dict[int, dict[str, Any]] = {}
    for i in range(n - 1, -1, -1):
        children: list[Any] = []
        for child in sorted(c for p, c in edges if p == i):
            if child in inline and first_parent[child] == i:
                children.append(docs[child])
            else:
                children.append(f"n{child}")
        if back_edge is not None and back_edge[0] == i:
            children.append(f"n{back_edge[1]}")
        docs[i] = {"name": f"n{i}", "queue": "q", "children": children}
    return Flow.model_validate(
        {"metadata": {"name": "random"}, "spec": {"nodes": [docs[i] for i in order]}}
    )


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_compile_keeps_edges_orders_children_first_and_finds_roots(
    dag: tuple[int, set[tuple[int, int]], set[int], list[int]],
) -> None:
    n, edges, inline, order = dag
    compiled = compile_flow(build_flow(n, edges, inline, order))
    names = {f"n{i}" for i in range(n)}
    want_edges = {(f"n{p}", f"n{c}") for p, c in edges}

    assert set(compiled.nodes) == names
    got_down = {(name, child) for name, node in compiled.nodes.items() for child in node.children}
    got_up = {(parent, name) for name, node in compiled.nodes.items() for parent in node.parents}
    assert got_down == want_edges
    assert got_up == want_edges

    position = {name: index for index, name in enumerate(compiled.nodes)}
    assert all(position[child] < position[parent] for parent, child in want_edges)

    assert set(compiled.roots) == {f"n{i}" for i in range(n) if not any(c == i for _, c in edges)}
    assert set(compiled.leaves) == {f"n{i}" for i in range(n) if not any(p == i for p, _ in edges)}
    assert len(compiled.roots) == len(set(compiled.roots))


def reachable(edges: set[tuple[int, int]], start: int) -> set[int]:
    seen, stack = {start}, [start]
    while stack:
        current = stack.pop()
        for parent, child in edges:
            if parent == current and child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


@settings(max_examples=150, deadline=None)
@given(random_dags(), st.data())
def test_any_back_edge_is_reported_as_a_real_cycle(
    dag: tuple[int, set[tuple[int, int]], set[int], list[int]], data: st.DataObject
) -> None:
    n, edges, inline, order = dag
    # A back edge from a descendant to an ancestor always closes a cycle.
    candidates = [(j, i) for i in range(n) for j in reachable(edges, i) if j != i]
    if not candidates:
        return
    back = data.draw(st.sampled_from(candidates))
    cyclic = edges | {back}
    try:
        compile_flow(build_flow(n, edges, inline, order, back_edge=back))
    except GraphError as exc:
        messages = [inner.message for inner in exc.errors]
    else:
        raise AssertionError(f"cycle through {back} compiled")
    cycles = [re.search(r"form a cycle: (.*?);", message) for message in messages]
    named = [match.group(1) for match in cycles if match]
    assert named, messages
    for text in named:
        cycle = [name.strip('"') for name in text.split(" -> ")]
        assert cycle[0] == cycle[-1] and len(cycle) >= 3
        for parent, child in pairwise(cycle):
            assert (int(parent[1:]), int(child[1:])) in cyclic, (text, cyclic)
