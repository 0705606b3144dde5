"""How a flow ends: what becomes of the nodes still queued or running when its outcome is
decided, and whether its counts agree with every node's state at each step."""

from __future__ import annotations

import asyncio
from collections import Counter

from kflow.api import FlowId
from kflow.engine import Engine
from tests.integration.engine_kit import build, new_ref, node, qid, run_flow, take_node


async def _agree(engine: Engine, uid: FlowId) -> dict[str, str]:
    """The snapshot's counts are exactly the nodes' states, and they add up to the total."""
    snap = await engine.snapshot(uid)
    states = {n: i.state for n, i in (await engine.node_infos(uid)).items()}
    assert snap.counts == dict(Counter(states.values())), (snap.counts, states)
    assert sum(snap.counts.values()) == snap.total
    return states


async def test_continue_parent_lets_every_sibling_run_before_the_flow_ends(
        engine: Engine) -> None:
    # BullMQ's case: five children, the continueParent one fails first; the parent starts at
    # once and finishes, yet the other four (one running, three queued) are all processed.
    ref = new_ref()
    await engine.submit(ref, build(
        node("parent", "cont", "s1", "s2", "s3", "s4", queue="p"),
        node("cont", queue="a", on_failure="continueParent"),
        *(node(f"s{i}", queue="b") for i in range(1, 5))))
    cont = await take_node(engine, "cont", "a")
    [s1] = await engine.take(qid("b"), 1, owner="test")
    await engine.fail(ref.id, "cont", cont.token, "card declined")
    parent = await take_node(engine, "parent", "p")
    assert await engine.failed_children(ref.id, "parent") == {"cont": "card declined"}
    [(values, ignored, failed)] = await engine.inputs_many(ref.id, ["parent"])
    assert (values, ignored, failed) == ({}, {}, {"cont": "card declined"})

    done = await engine.complete(ref.id, "parent", parent.token, "shipped")
    assert done.accepted and done.phase == "Running"  # four siblings are not settled yet
    assert (await _agree(engine, ref.id))["s2"] == "ready"
    assert (await engine.complete(ref.id, s1.node, s1.token, 1)).phase == "Running"
    rest = await engine.take(qid("b"), 10, owner="test")
    assert sorted(a.node for a in rest) == sorted({"s1", "s2", "s3", "s4"} - {s1.node})
    phases = [(await engine.complete(ref.id, a.node, a.token, 2)).phase for a in rest]
    assert phases == ["Running", "Running", "Succeeded"]
    snap = await engine.snapshot(ref.id)
    assert snap.counts == {"completed": 5, "failed": 1} and snap.done == snap.total == 6
    assert (await engine.node_infos(ref.id))["parent"].result == "shipped"


async def test_a_child_failing_after_continue_parent_released_the_parent_fails_alone(
        engine: Engine) -> None:
    # The parent already left waiting-children, so a later failParent child cannot fail it:
    # the outcome does not depend on whether the parent was taken before the failure.
    ref = new_ref()
    await engine.submit(ref, build(node("parent", "cont", "other", queue="p"),
                                   node("cont", queue="a", on_failure="continueParent"),
                                   node("other", queue="b")))
    cont = await take_node(engine, "cont", "a")
    other = await take_node(engine, "other", "b")
    await engine.fail(ref.id, "cont", cont.token, "first")
    await engine.fail(ref.id, "other", other.token, "second")
    states = await _agree(engine, ref.id)
    assert states == {"parent": "ready", "cont": "failed", "other": "failed"}
    parent = await take_node(engine, "parent", "p")
    assert (await engine.complete(ref.id, "parent", parent.token, 1)).phase == "Succeeded"


async def test_a_failed_flow_cancels_what_never_started_and_records_what_was_running(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(
        node("root", "x", "y", "mid", queue="p"),
        node("x", queue="a"), node("y", queue="b"),
        node("mid", "w", queue="b"), node("w", queue="c")))
    x = await take_node(engine, "x", "a")
    w = await take_node(engine, "w", "c")  # running when the flow fails
    assert (await engine.fail(ref.id, "x", x.token, "boom")).phase == "Failed"
    states = await _agree(engine, ref.id)
    assert states == {"root": "failed", "x": "failed", "y": "cancelled", "mid": "cancelled",
                      "w": "active"}
    assert await engine.queue_depth(qid("b")) == (0, 0, 0)  # y left its queue
    events = [(e["type"], e["node"]) for e in await engine.events(ref.id)]
    assert ("cancelled", "y") in events and ("cancelled", "mid") in events
    # What was running runs to its end and is recorded as what it was.
    assert (await engine.complete(ref.id, "w", w.token, "late")).accepted
    states = await _agree(engine, ref.id)
    assert states["w"] == "completed" and states["mid"] == "cancelled"
    snap = await engine.snapshot(ref.id)
    assert snap.phase == "Failed" and snap.done == snap.total

    # Retry brings back the failed and the cancelled nodes; the completed one stays done.
    assert await engine.retry_failed(ref.id) >= 2
    await _agree(engine, ref.id)
    run = await run_flow(engine, ref.id, {"p", "a", "b", "c"}, {})
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    assert run.runs["w"] == 0 and run.runs["mid"] == 1 and run.runs["y"] == 1
    assert set((await _agree(engine, ref.id)).values()) == {"completed"}


async def test_attempts_cut_off_by_the_end_of_a_flow_are_cancelled_not_failed(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("root", "a1", "a2", "a3"),
                                   node("a1"), node("a2"), node("a3")))
    held = {a.node: a for a in await engine.take(qid(), 10, owner="test")}
    await engine.cancel(ref.id)
    # The operator deletes the cancelled flow's Jobs: the lost pod is not the node's failure.
    out = await engine.fail(ref.id, "a1", held["a1"].token, "Job deleted while running",
                            infrastructure=True)
    assert out.accepted and out.action == "cancelled"
    # A worker handing its attempts back when the flow has ended: nothing will run them.
    assert await engine.release([held["a2"]], "worker shut down") == 1
    # A lease that lapses in an ended flow: cancelled too.
    await engine.renew([held["a3"]], 1)
    await asyncio.sleep(0.05)
    assert await engine.release_stalled(qid()) == [(ref.id, "a3")]
    states = await _agree(engine, ref.id)
    assert states == {"root": "cancelled", "a1": "cancelled", "a2": "cancelled",
                      "a3": "cancelled"}
    assert (await engine.snapshot(ref.id)).phase == "Cancelled"
