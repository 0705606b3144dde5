"""Chart tests: a real helm binary renders charts/kflow; the cluster tests use the real API server.

helm comes from tests/cluster/scripts/build-helm.sh, which prints the cached binary at once
(~/.cache/kflow/helm-<version>) and otherwise builds it from the Go module proxy (minutes, and
only where Go is installed). When it can be neither found nor built, the render tests skip;
the cluster tests fail instead (a cluster test may not skip, tests/cluster/fixture.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from kflow.devkit.checkout import REPO
from kflow.devkit.operator import Kube

CHART = REPO / "charts" / "kflow"
BUILD_HELM = REPO / "tests" / "cluster" / "scripts" / "build-helm.sh"


@dataclass(frozen=True)
class Rendered:
    """What `helm template` printed: every object, and a way to find them."""

    docs: list[dict[str, Any]]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [doc for doc in self.docs
                 if doc["kind"] == kind and doc["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered; have {self.names()}"
        return found[0]

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def names(self) -> list[str]:
        return sorted(f"{doc['kind']}/{doc['metadata']['name']}" for doc in self.docs)


@dataclass(frozen=True)
class Helm:
    binary: str

    def run(self, *args: str, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.binary, *args], capture_output=True, text=True,
                                timeout=120, env=env)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def template(self, *values: str, release: str = "kflow", namespace: str = "kflow-system",
                 extra: tuple[str, ...] = ()) -> Rendered:
        """`helm template` of the chart with `--set` for each of `values`."""
        sets = [arg for value in values for arg in ("--set", value)]
        result = self.run("template", release, str(CHART), "-n", namespace, *sets, *extra)
        return Rendered([doc for doc in yaml.safe_load_all(result.stdout) if doc])

    def template_fails(self, *values: str) -> str:
        """The error of a `helm template` that must fail."""
        sets = [arg for value in values for arg in ("--set", value)]
        result = self.run("template", "kflow", str(CHART), *sets, check=False)
        assert result.returncode != 0, f"helm template {values} was accepted"
        return result.stderr


@pytest.fixture(scope="session")
def helm() -> Helm:
    built = subprocess.run(["bash", str(BUILD_HELM)], capture_output=True, text=True,
                           timeout=1800)
    if built.returncode != 0:
        pytest.skip(f"helm can be neither found nor built: {built.stderr[-1500:]}")
    return Helm(built.stdout.strip().splitlines()[-1])




@pytest.fixture
def scratch_namespaces(kube: Kube) -> Iterator[list[str]]:
    """Namespaces a test creates (append the name after creating it); deleted afterwards."""
    made: list[str] = []
    try:
        yield made
    finally:
        for name in made:
            kube("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
