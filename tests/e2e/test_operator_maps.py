"""A map (forEach) over 10,000 items of a node's value on the cluster, with the operator killed
while it adds the items: after the restart every item exists once and runs once, and the map's
parent gets all 10,000 values in item order."""

from __future__ import annotations

import json
import time

import pytest
import redis

from kflow.api import FlowId
from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import Scenario
from kflow.store.keys import flow_keys
from tests.e2e.test_operator_workers import worker_queue

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ITEMS = 10_000


def test_a_map_over_ten_thousand_items_survives_an_operator_kill_while_adding_them(
        scenario: Scenario) -> None:
    scenario.apply(
        queue("lister", "numbers"), queue("merger", "merged"),
        worker_queue("mapper", "tally", {"min": 0, "max": 2, "nodesPerWorker": 500,
                                         "idleSeconds": 30}),
        flow("big-map", [
            {"name": "merge", "queue": "merger", "children": ["double"]},
            {"name": "double", "queue": "mapper",
             "forEach": {"from": "numbers", "path": "items"}},
            {"name": "numbers", "queue": "lister", "data": {"n": ITEMS}},
        ]))
    uid = scenario.uid("big-map")
    keys = flow_keys(scenario.prefix, FlowId.of(scenario.namespace, uid))
    client = redis.Redis.from_url(scenario.redis_url, decode_responses=True)

    def added() -> int:
        raw = client.hget(keys.progress, "double")
        return 0 if raw is None else int(json.loads(raw)["added"])

    # The operator adds the items once the lister's pod is done: kill it in the middle.
    deadline = time.monotonic() + 180
    while added() == 0:
        assert time.monotonic() < deadline, scenario.operator.log_tail()
        time.sleep(0.001)
    scenario.operator.kill9()
    at_kill = added()
    assert 0 < at_kill < ITEMS, f"the kill came after the expansion ({at_kill} items)"
    assert client.hget(keys.state, "double") == "expanding"
    assert int(client.hget(keys.meta, "total")) == 3 + at_kill

    scenario.operator.start()
    body = scenario.wait_phase("big-map", timeout=600)
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert status["total"] == 3 + ITEMS and status["progress"] == f"{3 + ITEMS}/{3 + ITEMS}"
    assert status["counts"]["completed"] == 3 + ITEMS
    results = scenario.results("big-map")
    assert results["merge"] == {"count": ITEMS, "sum": 2 * sum(range(ITEMS)), "in_order": True}
    runs = client.hgetall(f"kflow-test:runs:{uid}")
    assert len(runs) == ITEMS and set(runs) == {f"double[{i}]" for i in range(ITEMS)}
    assert set(runs.values()) == {"1"}, "an item ran twice"
    assert int(client.hlen(keys.state)) == 3 + ITEMS
