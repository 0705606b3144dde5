"""Exactly once across state loss: a Flow whose Redis state is gone is never recorded again.

Each test counts a node's side effect (a "payment") in its own Redis key, restarts the
operator after removing the flow's keys from Redis (what an expired TTL, a Redis without
persistence restarting, or a FLUSHALL does), and checks that nothing ran twice.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import Scenario, _run

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def effects(scenario: Scenario, uid: str, node: str) -> int:
    async def read() -> int:
        client = scenario._client()
        try:
            return int(await client.get(f"kflow-test:effects:{uid}:{node}") or 0)
        finally:
            await client.aclose()

    return _run(read())


def flow_keys(scenario: Scenario, uid: str) -> list[str]:
    """The flow's keys in Redis (not the test's own kflow-test:* keys)."""
    return [k for k in scenario.redis_keys(uid) if k.startswith(f"{scenario.prefix}:")]


def drop_flow_keys(scenario: Scenario, uid: str) -> int:
    """Delete every key of the flow: what an expired TTL or a lost Redis does."""
    keys = flow_keys(scenario, uid)

    async def delete() -> None:
        client = scenario._client()
        try:
            await client.delete(*keys)
        finally:
            await client.aclose()

    if keys:
        _run(delete())
    return len(keys)


def condition(body: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (body.get("status") or {}).get("conditions") or []
                 if c["type"] == ctype), {})


def logged(scenario: Scenario, text: str) -> bool:
    return text in scenario.operator.log_tail(400)


def test_a_finished_flow_whose_keys_are_gone_is_not_run_again_and_its_ttl_holds(
        scenario: Scenario) -> None:
    scenario.apply(queue("pay", "counted"),
                   flow("paid", [{"name": "charge", "queue": "pay"}],
                        ttlSecondsAfterFinished=25))
    body = scenario.wait_phase("paid")
    uid = body["metadata"]["uid"]
    assert body["status"]["phase"] == "Succeeded"
    assert body["status"]["recordedAt"]
    assert effects(scenario, uid, "charge") == 1
    scenario.wait_for("the finished Job to go", lambda: scenario.jobs() == [], timeout=60)

    scenario.operator.kill9()
    assert drop_flow_keys(scenario, uid) > 0  # what the keys' own TTL or a lost Redis does
    watch = scenario.watch_jobs()
    scenario.operator.start()
    scenario.wait_for("the restarted operator to look at the Flow",
                      lambda: logged(scenario, "its state is no longer in Redis"), timeout=60)
    time.sleep(3)  # a re-recorded node would have a Job by now

    assert watch.made() == {}
    assert effects(scenario, uid, "charge") == 1
    body = scenario.get_flow("paid")
    assert body["status"]["phase"] == "Succeeded"
    assert body["status"]["progress"] == "1/1"
    assert flow_keys(scenario, uid) == []
    # The TTL counts from the Flow's own finishedAt, not from the new operator's start.
    scenario.wait_for("the Flow to be deleted after its TTL", lambda: scenario.kube(
        "get", "flow", "paid", "-n", scenario.namespace, check=False).returncode != 0,
        timeout=90)


def test_a_flow_lost_while_running_waits_for_the_user_then_starts_over_on_retry(
        scenario: Scenario) -> None:
    scenario.apply(queue("pay", "counted"), queue("hold", "wait_for_gate"),
                   flow("checkout", [{"name": "ship", "queue": "hold",
                                      "children": ["charge"]},
                                     {"name": "charge", "queue": "pay"}]))
    uid = scenario.uid("checkout")
    scenario.wait_for("the payment", lambda: effects(scenario, uid, "charge") == 1,
                      timeout=120)
    scenario.wait_for("the parent to run", lambda: any(
        j["metadata"]["labels"].get("kflow.dev/queue") == "hold" for j in scenario.jobs()),
        timeout=120)

    scenario.operator.kill9()
    assert drop_flow_keys(scenario, uid) > 0
    running = {j["metadata"]["name"] for j in scenario.jobs()}
    watch = scenario.watch_jobs()
    scenario.operator.start()
    scenario.wait_for("the StateLost condition", lambda: condition(
        scenario.get_flow("checkout"), "StateLost").get("status") == "True", timeout=60)
    time.sleep(3)

    body = scenario.get_flow("checkout")
    lost = condition(body, "StateLost")
    assert lost["reason"] == "RedisStateLost"
    assert "kflow.dev/retry" in lost["message"] and "checkout" in lost["message"]
    assert body["status"]["phase"] == "Running"  # what it last was; nothing restarted
    assert set(watch.made()) - running == set()
    assert effects(scenario, uid, "charge") == 1
    assert flow_keys(scenario, uid) == []
    assert [e["message"] for e in scenario.events("StateLost")]

    # The user asks to start over: the whole flow runs again, once.
    scenario.open_gate(uid)
    scenario.kube("annotate", "flow", "checkout", "-n", scenario.namespace,
                  "kflow.dev/retry=1", "--overwrite")
    body = scenario.wait_phase("checkout", timeout=180)

    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert condition(body, "StateLost")["status"] == "False"
    assert effects(scenario, uid, "charge") == 2
    assert scenario.events("StartedOver")
