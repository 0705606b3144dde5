"""e2e fixtures: kubectl on the local cluster, an OperatorWorld, one Scenario per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kflow.devkit.cluster import bin_dir
from kflow.devkit.operator import Kube, OperatorWorld, Scenario, kubectl_from_kubeconfig
from kflow.devkit.redis import RedisServer


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Kube:
    """The local cluster's kubectl (the kube_cluster fixture).

    KFLOW_E2E_KUBECONFIG=PATH skips the fixture's `make cluster-up` and uses that cluster.
    """
    direct = os.environ.get("KFLOW_E2E_KUBECONFIG")
    if direct:
        kubectl = bin_dir() / "kubectl"
        return kubectl_from_kubeconfig(Path(direct),
                                       str(kubectl) if kubectl.exists() else "kubectl")
    # Looked up here, not declared: with KFLOW_E2E_KUBECONFIG the cluster is never started.
    return Kube.of_cluster(request.getfixturevalue("kube_cluster"))


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
