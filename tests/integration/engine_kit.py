"""Shared pieces of the store/engine suites: compiled-flow builders, queue helpers, and a
small driver that runs a flow's nodes with plain functions (the `engine` fixture itself is
in conftest.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kflow.api import FlowId, QueueId
from kflow.engine import Attempt, Engine, FlowRef
from kflow.graph.dag import CompiledFlow, CompiledNode, CompiledOptions
from kflow.store.codec import queue_rank
from kflow.store.keys import queue_member

NS = "team-a"


@dataclass(frozen=True)
class N:
    """A node as a test writes it: name, queue, children, data, options."""

    name: str
    queue: str = "work"
    children: tuple[str, ...] = ()
    data: Any = None
    opts: CompiledOptions = field(default_factory=CompiledOptions)


def node(name: str, *children: str, queue: str = "work", data: Any = None, **opts: Any) -> N:
    return N(name, queue, tuple(children), data, CompiledOptions(**opts))


def build(*nodes: N) -> CompiledFlow:
    """A CompiledFlow as the compiler would hand it over: children before parents."""
    by_name = {n.name: n for n in nodes}
    parents: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for c in n.children:
            parents[c].append(n.name)
    order: list[str] = []
    pending = {n.name: len(n.children) for n in nodes}
    frontier = [n.name for n in nodes if not n.children]
    while frontier:
        name = frontier.pop()
        order.append(name)
        for p in parents[name]:
            pending[p] -= 1
            if pending[p] == 0:
                frontier.append(p)
    assert len(order) == len(nodes), "test flow has a cycle"
    compiled = {
        name: CompiledNode(name, by_name[name].queue, by_name[name].data, by_name[name].opts,
                           by_name[name].children, tuple(parents[name]))
        for name in order
    }
    return CompiledFlow(
        nodes=compiled,
        roots=tuple(n for n in compiled if not parents[n]),
        leaves=tuple(n for n in compiled if not by_name[n].children),
    )


def new_ref(name: str = "flow") -> FlowRef:
    return FlowRef(uid=str(uuid.uuid4()), namespace=NS, name=name)


def delayed_member(uid: str, node: str, priority: int = 0) -> str:
    """The queue's delayed-set member of a FIFO node (what a test reads a due time by)."""
    return f"{queue_member(uid, node)}|{queue_rank(priority, lifo=False)}"


def qid(queue: str = "work") -> QueueId:
    return QueueId(NS, queue)


async def take_all(engine: Engine, queue: str = "work", n: int = 100) -> list[Attempt]:
    return await engine.take(qid(queue), n, owner="test")


async def take_map(engine: Engine, queue: str = "work") -> dict[str, Attempt]:
    """Take everything ready on the queue, by node name."""
    return {a.node: a for a in await take_all(engine, queue)}


async def take_node(engine: Engine, name: str, queue: str = "work") -> Attempt:
    """Take everything ready on the queue and return the attempt of `name`."""
    taken = await take_map(engine, queue)
    if name not in taken:
        raise AssertionError(f"node {name} was not ready on queue {queue}: got {sorted(taken)}")
    return taken[name]


Handler = Callable[[Attempt, dict[str, Any]], Any]


@dataclass
class Run:
    runs: Counter[str] = field(default_factory=Counter)
    seen_children: dict[str, dict[str, Any]] = field(default_factory=dict)


async def run_flow(engine: Engine, uid: FlowId, queues: set[str], handlers: dict[str, Handler],
                   default: Handler | None = None, max_rounds: int = 10_000) -> Run:
    """Run the flow's nodes until it leaves Running: each node's handler gets its attempt and
    its children's values; a raised exception fails the attempt."""
    run = Run()
    for _ in range(max_rounds):
        if (await engine.snapshot(uid)).phase != "Running":
            return run
        took = False
        for queue in sorted(queues):
            for attempt in await engine.take(qid(queue), 50, owner="runner"):
                took = True
                run.runs[attempt.node] += 1
                values = await engine.children_values(uid, attempt.node)
                run.seen_children[attempt.node] = values
                handler = handlers.get(attempt.node, default or (lambda a, v: a.node))
                try:
                    value = handler(attempt, values)
                except Exception as exc:  # the node's own failure
                    await engine.fail(uid, attempt.node, attempt.token, str(exc))
                else:
                    await engine.complete(uid, attempt.node, attempt.token, value)
        if not took:
            due = [await engine.promote_due(qid(q)) for q in queues]
            await asyncio.sleep(0.01 if any(d is not None for d in due) else 0.001)
    raise AssertionError("flow did not finish")


class Stopped:
    """Stands in for kopf's daemon flag: falsy until set, awaitable `wait()`."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def wait(self) -> Any:
        return self._event.wait()
