"""An attempt that stored its result has committed its side effects: whatever is reported of
it afterwards (a failure, a lost pod, a lapsed lease), it completes with that value and the
node never runs again."""

from __future__ import annotations

import asyncio

import pytest

from kflow.engine import Engine
from tests.integration.engine_kit import build, new_ref, node, qid, take_all, take_map


@pytest.mark.parametrize("infrastructure", [False, True])
async def test_a_failure_reported_after_the_result_was_stored_completes_the_node(
        engine: Engine, infrastructure: bool) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("ship", "charge"), node("charge", attempts=3)))
    charge = (await take_map(engine))["charge"]
    await engine.store_result(ref.id, "charge", charge.token, {"charged": 42})

    # e.g. the pod was evicted (infrastructure) or killed by its deadline after it stored
    # the value and before it exited.
    outcome = await engine.fail(ref.id, "charge", charge.token, "pod went away",
                                infrastructure=infrastructure)

    assert outcome.accepted and outcome.action == "completed"
    infos = await engine.node_infos(ref.id)
    assert infos["charge"].state == "completed" and infos["charge"].result == {"charged": 42}
    assert infos["charge"].attempt == 1
    ship = (await take_map(engine))["ship"]  # the parent got the value, once
    [inputs] = await engine.inputs_many(ref.id, [ship.node])
    assert dict(inputs[0]) == {"charge": {"charged": 42}}  # (children values, ...)
    assert await take_all(engine) == []


async def test_a_lapsed_lease_after_the_result_was_stored_completes_the_node(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("charge")))
    charge = (await engine.take(qid(), 1, owner="w1", lease_ms=1))[0]
    await engine.store_result(ref.id, "charge", charge.token, "paid")
    await asyncio.sleep(0.05)

    assert await engine.release_stalled(qid()) == [(ref.id, "charge")]

    infos = await engine.node_infos(ref.id)
    assert infos["charge"].state == "completed" and infos["charge"].result == "paid"
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    assert await take_all(engine) == []  # nothing to run again


async def test_a_failure_without_a_stored_result_still_retries(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("charge", attempts=2)))
    charge = (await take_map(engine))["charge"]

    outcome = await engine.fail(ref.id, "charge", charge.token, "declined")

    assert outcome.action == "retry"
    assert (await engine.node_infos(ref.id))["charge"].result is None
