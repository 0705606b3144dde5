"""e2e fixtures: kubectl on the local cluster, an OperatorWorld, one Scenario per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kflow.devkit.operator import Kube, OperatorWorld, Scenario
from kflow.devkit.redis import RedisServer


@pytest.fixture(scope="session")
def operator_world(kube: Kube, redis_srv: RedisServer,
                   tmp_path_factory: pytest.TempPathFactory) -> OperatorWorld:
    """The CRDs installed once; scenarios share the session's Redis."""
    world = OperatorWorld(kube, redis_srv.url, tmp_path_factory.mktemp("operator"))
    world.install_crds()
    return world


@pytest.fixture
def scenario(operator_world: OperatorWorld) -> Iterator[Scenario]:
    """A fresh namespace with the Redis Secret and a running operator watching it."""
    with operator_world.scenario() as scenario:
        yield scenario
