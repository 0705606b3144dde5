"""`make test` fails, never skips, a cluster test that cannot reach its cluster."""

from __future__ import annotations

import pytest

SUITE = """
import pytest

@pytest.fixture
def cluster():
    pytest.skip("no local cluster: kubeconfig not found")

@pytest.mark.cluster
def test_needs_a_cluster_from_a_fixture(cluster):
    pass

@pytest.mark.cluster
def test_skips_in_its_body():
    pytest.skip("cluster unreachable")

def test_not_a_cluster_test():
    pytest.skip("optional tool missing")

@pytest.mark.cluster
@pytest.mark.xfail(reason="known", run=False)
def test_expected_to_fail():
    pass
"""


INI = """
[pytest]
markers =
    cluster: needs the local cluster
asyncio_default_fixture_loop_scope = function
"""


def test_a_skipped_cluster_test_is_reported_as_a_failure(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "tests.cluster.fixture", "-rA")
    result.assert_outcomes(failed=1, errors=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(["*a cluster test may not skip (cluster unreachable)*"])
    result.stdout.fnmatch_lines(
        ["*a cluster test may not skip (no local cluster: kubeconfig not found)*"])


def test_deselecting_by_marker_still_leaves_them_out(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "tests.cluster.fixture", "-m", "not cluster")
    result.assert_outcomes(skipped=1, deselected=3)
