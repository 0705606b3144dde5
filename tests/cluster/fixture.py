"""Pytest plugin that gives tests the real local Kubernetes cluster (kflow.devkit.cluster)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from kflow.devkit.cluster import ClusterUpError, LocalCluster, fresh_namespace, shared_cluster


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[LocalCluster]:
    """The local cluster: reused when running, else started here and stopped after the session.

    A session that started the cluster stops it only when no other session still uses it;
    KFLOW_KEEP_CLUSTER=1 leaves it running in any case.
    """
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(shared_cluster())
        except ClusterUpError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield cluster


@pytest.fixture
def kube_namespace(kube_cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace whose default service account exists; deleted (not awaited) afterwards."""
    with fresh_namespace(kube_cluster) as name:
        yield name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A cluster test that skips fails instead; attach the tails of the components' logs to
    every failed test that used a cluster.

    `make test` runs every marker: a cluster test that cannot reach its cluster must not pass
    as skipped (`make test-fast` leaves them out by marker, before they run).
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("cluster") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        reason = str(reason).removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (
            f"a cluster test may not skip ({reason}); it needs the local cluster "
            "(`make cluster-up`, tests/cluster/README.md). To leave the cluster tests out, "
            "run `make test-fast` or pytest -m 'not cluster'."
        )
    if not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, LocalCluster):
            report.sections.append((f"{name}: component logs (tails)", value.log_tails(40)))
