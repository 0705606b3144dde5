"""Chaos fixtures: per test a Redis with an AOF that the fault may kill, the operator reaching it
on its own loopback address, and a ledger of side effects kept in the session's other Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kflow.devkit.chaos import AofRedis, LastingWatch, Ledger, aof_redis
from kflow.devkit.operator import Kube, OperatorWorld, Scenario
from kflow.devkit.redis import RedisServer


@pytest.fixture(scope="session")
def crds(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CRDs installed once; returns the folder the operators' logs go to."""
    logs = tmp_path_factory.mktemp("chaos")
    OperatorWorld(kube, "", logs).install_crds()
    return logs


@pytest.fixture
def faulty_redis() -> Iterator[AofRedis]:
    with aof_redis() as server:
        yield server


@pytest.fixture
def ledger(redis_srv: RedisServer) -> Ledger:
    return Ledger(redis_srv.url)


@pytest.fixture
def scenario(kube: Kube, crds: Path, faulty_redis: AofRedis) -> Iterator[Scenario]:
    """A namespace whose pods reach `faulty_redis` on 127.0.0.1 and whose operator reaches it
    on OPERATOR_ADDR (so a loopback rule can cut the operator alone); every Job and pod it
    makes is watched from the start (scenario.watchers)."""
    world = OperatorWorld(kube, faulty_redis.url, crds)
    with world.scenario(redis_url=faulty_redis.operator_url) as scenario:
        for resource in ("jobs", "pods"):
            watch = LastingWatch(kube, scenario.namespace, resource)
            watch.start()
            scenario.watchers.append(watch)
        yield scenario
