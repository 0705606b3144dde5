"""The installed-chart e2e set: one `helm install` of charts/kflow (operator and Redis as pods,
the examples image) for the module, serving one namespace of flows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kflow.devkit.install import Installation, helm_binary, load_images
from kflow.devkit.operator import JobWatch, Kube

EXAMPLES_IMAGE = "localhost/kflow-examples:dev"
# A node that fails until its gate, the ConfigMap named like its Queue, exists (mounted,
# optional), then runs an examples handler: a failure a retry can fix without touching the flow.
GATED_SHELL = ("if [ -e /gate/open ]; then echo 'the gate is open'; "
               "exec kflow-run examples.handlers:critical_task; fi; "
               "echo 'the gate is closed' >&2; exit 3")


def gate_queue(name: str) -> dict[str, Any]:
    """A Job Queue `name` whose nodes run GATED_SHELL with the ConfigMap `name` as the gate."""
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": name},
            "spec": {"mode": "Job", "template": {"spec": {
                "containers": [{"name": "main", "image": EXAMPLES_IMAGE,
                                "command": ["/bin/sh", "-c", GATED_SHELL],
                                "volumeMounts": [{"name": "gate", "mountPath": "/gate"}]}],
                "volumes": [{"name": "gate",
                             "configMap": {"name": name, "optional": True}}]}}}}


def until(what: str, check: Callable[[], bool], timeout: float, every: float = 1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@dataclass
class Installed:
    inst: Installation
    flows: str  # the namespace the release serves, with its kflow-redis Secret
    other: str  # a second namespace it serves: another tenant of the same Redis
    pods: JobWatch  # every pod made in `flows` while the module runs, deleted ones too

    @property
    def kube(self) -> Kube:
        return self.inst.kube

    def open_gate(self, queue: str) -> None:
        """Let the nodes of the gate_queue `queue` in the flows namespace succeed."""
        self.kube("-n", self.flows, "create", "configmap", queue, "--from-literal=open=yes")


@pytest.fixture(scope="module")
def installed(kube: Kube) -> Iterator[Installed]:
    """A release serving only its own flows namespace (so it never meets other tests' flows)
    with the bundled Redis on a volume; purged afterwards, CRDs left."""
    yield from release(kube)


def release(kube: Kube, *values: str) -> Iterator[Installed]:
    """The `installed` release, with more `helm --set` style `values` (a module's own
    fixture passes them, e.g. ("--set", "cron.timeScale=20"))."""
    load_images()
    suffix = uuid.uuid4().hex[:6]
    flows, other = f"kflow-flows-{suffix}", f"kflow-other-{suffix}"
    for namespace in (flows, other):
        kube("create", "namespace", namespace)
    inst = Installation(kube, helm_binary(), release=f"kflow-{suffix}",
                        namespace=f"kflow-system-{suffix}",
                        values=["--set", f"watchNamespaces={{{flows},{other}}}", *values])
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
            kube("delete", "cronflows,flows,queues", "--all", "-n", namespace, check=False,
                 timeout=180)
        inst.purge()
        for namespace in (flows, other):
            kube("delete", "namespace", namespace, "--ignore-not-found", check=False,
                 timeout=180)
