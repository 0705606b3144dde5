"""The installed-chart e2e set: one `helm install` of charts/kflow (operator and Redis as pods,
the examples image) for the module, serving one namespace of flows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kflow.devkit.install import Installation, helm_binary, load_images
from kflow.devkit.operator import JobWatch, Kube


@dataclass
class Installed:
    inst: Installation
    flows: str  # the namespace the release serves, with its kflow-redis Secret
    other: str  # a second namespace it serves: another tenant of the same Redis
    pods: JobWatch  # every pod made in `flows` while the module runs, deleted ones too

    @property
    def kube(self) -> Kube:
        return self.inst.kube


@pytest.fixture(scope="module")
def installed(kube: Kube) -> Iterator[Installed]:
    """A release serving only its own flows namespace (so it never meets other tests' flows)
    with the bundled Redis on a volume; purged afterwards, CRDs left."""
    load_images()
    suffix = uuid.uuid4().hex[:6]
    flows, other = f"kflow-flows-{suffix}", f"kflow-other-{suffix}"
    for namespace in (flows, other):
        kube("create", "namespace", namespace)
    inst = Installation(kube, helm_binary(), release=f"kflow-{suffix}",
                        namespace=f"kflow-system-{suffix}",
                        values=["--set", f"watchNamespaces={{{flows},{other}}}"])
    pods = JobWatch(kube, flows, "pods")
    pods.start()
    try:
        inst.install()  # tenants on (the bundled Redis): the operator makes the pods Secret
        yield Installed(inst, flows, other, pods)
    finally:
        pods.stop()
        # Flows first, while an operator may still take its finalizer off them (a test that
        # failed before the uninstall test leaves them).
        for namespace in (flows, other):
            kube("delete", "flows,queues", "--all", "-n", namespace, check=False, timeout=180)
        inst.purge()
        for namespace in (flows, other):
            kube("delete", "namespace", namespace, "--ignore-not-found", check=False,
                 timeout=180)
