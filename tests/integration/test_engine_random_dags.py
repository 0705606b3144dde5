"""Random DAGs with random failures run to the end without breaking the engine's invariants."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from kflow.engine import Attempt, Engine
from tests.integration.engine_kit import N, build, new_ref, node, run_flow

POLICIES = ["failParent", "failParent", "ignore", "remove", "continueParent"]
SETTLED = {"completed", "failed", "ignored", "removed"}


def random_flow(rng: random.Random, size: int) -> list[N]:
    nodes = []
    for i in range(size):
        children = [f"n{j}" for j in range(i) if rng.random() < 2.5 / (i + 1)]
        nodes.append(node(f"n{i}", *children, queue=rng.choice(["a", "b"]),
                          attempts=rng.choice([1, 1, 2]), on_failure=rng.choice(POLICIES),
                          priority=rng.randrange(3)))
    return nodes


@pytest.mark.parametrize("seed", range(10))
async def test_random_dag_keeps_invariants(engine: Engine, seed: int) -> None:
    rng = random.Random(seed)
    ref = new_ref()
    flow = build(*random_flow(rng, 30))
    await engine.submit(ref, flow)

    def handler(attempt: Attempt, values: dict[str, Any]) -> Any:
        if rng.random() < 0.2:
            raise RuntimeError(f"{attempt.node} broke on attempt {attempt.attempt}")
        return {"node": attempt.node, "inputs": sorted(values)}

    run = await run_flow(engine, ref.id, {"a", "b"}, {}, default=handler)
    snap = await engine.snapshot(ref.id)
    infos = await engine.node_infos(ref.id)
    assert snap.phase in ("Succeeded", "Failed")
    assert snap.counts == dict(Counter(i.state for i in infos.values()))
    assert sum(snap.counts.values()) == snap.total == len(flow.nodes)
    roots_done = all(infos[r].state == "completed" for r in flow.roots)
    assert roots_done == (snap.phase == "Succeeded")
    for name, n in flow.nodes.items():
        assert run.runs[name] <= n.opts.attempts
        if infos[name].state == "completed":
            assert infos[name].result["inputs"] == sorted(run.seen_children[name])

    events = await engine.events(ref.id)
    completed = Counter(e["node"] for e in events if e["type"] == "completed")
    assert set(completed.values()) <= {1}  # each result recorded exactly once
    settled_at: dict[str, int] = {}
    continue_failed_at: dict[str, int] = {}
    for pos, e in enumerate(events):
        name = e["node"]
        if e["type"] in SETTLED and name not in settled_at:
            settled_at[name] = pos
            if e["type"] == "failed" and flow.nodes[name].opts.on_failure == "continueParent":
                continue_failed_at[name] = pos
        if e["type"] == "started":
            children = flow.nodes[name].children
            released_early = any(continue_failed_at.get(c, pos) < pos for c in children)
            for c in children:
                assert released_early or settled_at.get(c, pos) < pos, \
                    f"{name} started before its child {c} settled"

    if snap.phase == "Failed":  # retried with code that works now, the flow must succeed
        assert await engine.retry_failed(ref.id) >= 1
        await run_flow(engine, ref.id, {"a", "b"}, {})
        after = await engine.snapshot(ref.id)
        assert after.phase == "Succeeded", after
        assert all(s in ("completed", "ignored", "removed") for s in after.counts)
        again = Counter(e["node"] for e in await engine.events(ref.id)
                        if e["type"] == "completed")
        assert set(again.values()) <= {1}
