"""Worker Deployment names are unique per queue, and kflow touches only the ones it owns."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from kflow.api.ids import QueueId
from kflow.api.models import Queue
from kflow.kube.scaler import (
    NotOurDeployment,
    PoolState,
    build_deployment,
    deployment_name,
    legacy_deployment_name,
    reconcile_worker_pool,
    retire_legacy_pool,
)
from tests.unit.test_scaler import POOL_QUEUE, FakeEngine, MemoryDeployments

SHARED = "orders-ingest-from-the-warehouse-system-of-region-"  # 50 characters


def _queue(name: str, uid: str = "u-1") -> dict[str, Any]:
    queue = copy.deepcopy(POOL_QUEUE)
    queue["metadata"] = {"name": name, "namespace": "team", "uid": uid}
    return queue


def test_queues_whose_names_share_50_characters_get_two_deployments() -> None:
    a, b = deployment_name(SHARED + "eu-west"), deployment_name(SHARED + "us-east")
    assert a != b
    assert all(len(n) <= 63 and n.startswith("kflow-worker-orders-ingest") for n in (a, b))
    assert deployment_name(SHARED + "eu-west") == a  # stable across calls and restarts
    assert deployment_name("squares") == "kflow-worker-squares"  # short names as before


def test_two_long_queues_reconcile_into_two_deployments() -> None:
    async def scenario() -> None:
        engine, api = FakeEngine(), MemoryDeployments()
        for name, uid in ((SHARED + "eu-west", "u-1"), (SHARED + "us-east", "u-2")):
            await reconcile_worker_pool(_queue(name, uid), engine, api, PoolState(), now_ms=0)
        assert len(api.objects) == 2
        assert api.calls == ["read", "create", "read", "create"]

    asyncio.run(scenario())


@pytest.mark.parametrize("intruder", ["someone else's", "another Queue's"])
def test_a_deployment_of_the_pool_name_that_kflow_does_not_own_is_left_alone(
        intruder: str) -> None:
    async def scenario() -> None:
        engine, api = FakeEngine(), MemoryDeployments()
        engine.depth = (20, 0, 0)
        name = deployment_name("squares")
        if intruder == "someone else's":
            theirs: dict[str, Any] = {"metadata": {"name": name, "labels": {"app": "web"}},
                                      "spec": {"replicas": 2}}
        else:  # a Queue of that name deleted and made again: the old one's, being collected
            await reconcile_worker_pool(_queue("squares", uid="old"), engine, api,
                                        PoolState(), now_ms=0)
            theirs = api.objects[name]
        api.objects[name] = copy.deepcopy(theirs)
        api.calls.clear()
        with pytest.raises(NotOurDeployment) as refused:
            await reconcile_worker_pool(_queue("squares", uid="u-1"), engine, api, PoolState(),
                                        now_ms=1_000)
        assert api.calls == ["read"], "no create, replace or scale of a foreign Deployment"
        assert api.objects[name] == theirs
        message = str(refused.value)
        assert f"Deployment {name} exists but is not this Queue's worker pool" in message
        assert "delete or rename that Deployment, or give the Queue another name" in message

    asyncio.run(scenario())


class DeletableDeployments(MemoryDeployments):
    async def delete_deployment(self, namespace: str, name: str) -> None:
        self.calls.append(f"delete {name}")
        self.objects.pop(name, None)


def test_a_pool_left_under_its_pre_hash_name_is_retired_only_by_its_own_queue() -> None:
    async def scenario() -> None:
        api = DeletableDeployments()
        mine, other = SHARED + "eu-west", SHARED + "us-east"
        old = legacy_deployment_name(mine)
        assert old is not None and old == legacy_deployment_name(other)  # the old collision
        assert legacy_deployment_name("squares") is None  # short names never changed
        # As an older kflow left it: the last queue to reconcile it labelled and owned it.
        pool = build_deployment(Queue.model_validate(_queue(mine, "u-1")), 2)
        pool["metadata"]["name"] = old
        api.objects[old] = pool
        assert not await retire_legacy_pool(QueueId("team", other), "u-2", api)
        assert old in api.objects
        assert await retire_legacy_pool(QueueId("team", mine), "u-1", api)
        assert old not in api.objects

    asyncio.run(scenario())
