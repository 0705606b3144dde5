"""Fixtures shared by every test layer: real Redis servers, started privately per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kflow.devkit.redis import RedisCluster, RedisServer, redis_cluster, redis_server

# tests.cluster.fixture: the local cluster (kube_cluster, kube_namespace) for every folder that
# has cluster tests, and the hook that fails a cluster test that skips.
# pytester: tests of the test machinery itself (tests/unit/test_cluster_tests_never_skip.py).
pytest_plugins = ["tests.cluster.fixture", "pytester"]


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """A private redis-server for the whole session; tests isolate by flushing or by unique keys."""
    with redis_server() as srv:
        yield srv


@pytest.fixture(scope="session")
def redis_cluster_srv() -> Iterator[RedisCluster]:
    """A private 3-master Redis Cluster for the whole session."""
    with redis_cluster(3) as cluster:
        yield cluster
