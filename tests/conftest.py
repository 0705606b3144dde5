"""Fixtures shared by every test layer: real Redis servers started privately per session, and
kubectl on the local cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kflow.devkit.cluster import bin_dir
from kflow.devkit.operator import Kube, kubectl_from_kubeconfig
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


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Kube:
    """kubectl on the local cluster (the kube_cluster fixture), for e2e and chart tests.

    KFLOW_E2E_KUBECONFIG=PATH uses that cluster as it is: nothing is started or stopped.
    """
    direct = os.environ.get("KFLOW_E2E_KUBECONFIG")
    if direct:
        kubectl = bin_dir() / "kubectl"
        return kubectl_from_kubeconfig(Path(direct),
                                       str(kubectl) if kubectl.exists() else "kubectl")
    # Looked up here, not declared: with KFLOW_E2E_KUBECONFIG the cluster is never started.
    return Kube.of_cluster(request.getfixturevalue("kube_cluster"))

