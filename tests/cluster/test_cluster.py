"""The local cluster behaves like a real one for what kflow relies on: API, Jobs, pods, GC, TTL."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from kflow.devkit.cluster import K8S_VERSION, LocalCluster

pytestmark = pytest.mark.cluster

RUNNER = "localhost/kflow-runner:dev"


def job_manifest(name: str, code: str, **spec: Any) -> dict[str, Any]:
    """A batch/v1 Job running a Python one-liner in the runner image."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {"name": "main", "image": RUNNER, "command": ["python3", "-c", code]}
                    ],
                }
            },
        },
    }


def job_condition(cluster: LocalCluster, ns: str, name: str) -> str | None:
    """'Complete' or 'Failed' once the Job has finished, else None."""
    job = cluster.get_json("job", name, namespace=ns)
    for cond in job.get("status", {}).get("conditions", []):
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return str(cond["type"])
    return None


def job_pods(cluster: LocalCluster, ns: str, name: str) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-l", f"job-name={name}", namespace=ns)
    return list(pods["items"])


@contextmanager
def watch(
    cluster: LocalCluster, ns: str, what: str, jsonpath: str
) -> Iterator[Iterator[list[str]]]:
    """Watch `what` through the API; yields an iterator of events, each split into words."""
    proc = subprocess.Popen(
        [
            str(cluster.bin_dir / "kubectl"),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            ns,
            "get",
            what,
            "--watch",
            "--output-watch-events",
            "-o",
            f'jsonpath={jsonpath}{{"\\n"}}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    # A watch that hangs must not hang the suite.
    timer = threading.Timer(180, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        yield (line.split() for line in proc.stdout)
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()


def read_until(events: Iterator[list[str]], last: Callable[[list[str]], bool]) -> list[str]:
    """Events up to and including the first for which last() holds (fails if the watch ends)."""
    seen = []
    for event in events:
        seen.append(event)
        if last(event):
            return seen
    raise AssertionError(f"the watch ended before the awaited event; saw {seen}")


def exists(cluster: LocalCluster, ns: str, *what: str) -> bool:
    return cluster.kubectl("-n", ns, "get", *what, check=False).returncode == 0


def test_node_is_ready_and_reports_the_built_version(kube_cluster: LocalCluster) -> None:
    nodes = kube_cluster.get_json("nodes")["items"]
    assert len(nodes) == 1
    node = nodes[0]
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == K8S_VERSION
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    # Every address of the node is loopback: nothing of the cluster talks over other interfaces.
    addresses = [ipaddress.ip_address(a["address"]) for a in node["status"]["addresses"]]
    assert addresses and all(a.is_loopback for a in addresses)
    version = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == K8S_VERSION
    assert version["clientVersion"]["gitVersion"] == K8S_VERSION


def test_crd_applies_and_serves_objects(kube_cluster: LocalCluster, kube_namespace: str) -> None:
    group = f"g{uuid.uuid4().hex[:8]}.test.kflow.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kube_cluster.apply(crd)
    try:
        kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}")
        widget = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        # Discovery may lag the Established condition by a moment.
        kube_cluster.wait_until(
            "the new resource to be served",
            lambda: (
                kube_cluster.kubectl(
                    "-n", kube_namespace, "apply", "-f", "-", input=json.dumps(widget), check=False
                ).returncode
                == 0
            ),
        )
        got = kube_cluster.get_json(f"widgets.{group}", "w1", namespace=kube_namespace)
        assert got["spec"] == {"size": 3}
        # The schema is enforced by the API server, so the CRD really serves, not just stores.
        bad = {**widget, "metadata": {"name": "w2"}, "spec": {"size": 0}}
        proc = kube_cluster.kubectl(
            "-n", kube_namespace, "apply", "-f", "-", input=json.dumps(bad), check=False
        )
        assert proc.returncode != 0
        assert "spec.size" in proc.stderr
    finally:
        kube_cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def test_job_runs_python_in_runner_image(kube_cluster: LocalCluster, kube_namespace: str) -> None:
    code = (
        "import json, sys, kflow; "
        "print('kflow-job-says', sum(range(10)), sys.version_info[:2]); "
        "open('/dev/termination-log', 'w').write(json.dumps({'answer': 42}))"
    )
    kube_cluster.apply(job_manifest("py", code), namespace=kube_namespace)
    cond = kube_cluster.wait_until(
        "job py to finish", lambda: job_condition(kube_cluster, kube_namespace, "py")
    )
    assert cond == "Complete"
    logs = kube_cluster.kubectl("-n", kube_namespace, "logs", "job/py").stdout
    assert "kflow-job-says 45 (3, 11)" in logs
    (pod,) = job_pods(kube_cluster, kube_namespace, "py")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert json.loads(terminated["message"]) == {"answer": 42}


def test_host_network_pod_reaches_redis_on_loopback(
    kube_cluster: LocalCluster, kube_namespace: str, redis_srv: Any
) -> None:
    code = (
        f"import socket; s = socket.create_connection(('127.0.0.1', {redis_srv.port})); "
        "s.sendall(b'SET kflow-cluster-probe reached\\r\\n'); print(s.recv(64))"
    )
    manifest = job_manifest("redis", code)
    manifest["spec"]["template"]["spec"]["hostNetwork"] = True
    kube_cluster.apply(manifest, namespace=kube_namespace)
    cond = kube_cluster.wait_until(
        "job redis to finish", lambda: job_condition(kube_cluster, kube_namespace, "redis")
    )
    logs = kube_cluster.kubectl("-n", kube_namespace, "logs", "job/redis").stdout
    assert cond == "Complete", logs
    assert "+OK" in logs

    client = redis.Redis.from_url(redis_srv.url)
    assert client.get("kflow-cluster-probe") == b"reached"


def test_deleting_the_owner_garbage_collects_the_job(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    kube_cluster.kubectl("-n", kube_namespace, "create", "configmap", "owner")
    owner = kube_cluster.get_json("configmap", "owner", namespace=kube_namespace)
    manifest = job_manifest("owned", "print('owned')")
    manifest["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner["metadata"]["uid"],
            "blockOwnerDeletion": True,
        }
    ]
    kube_cluster.apply(manifest, namespace=kube_namespace)
    kube_cluster.wait_until(
        "job owned to finish", lambda: job_condition(kube_cluster, kube_namespace, "owned")
    )
    assert job_pods(kube_cluster, kube_namespace, "owned")
    kube_cluster.kubectl("-n", kube_namespace, "delete", "configmap", "owner")
    kube_cluster.wait_until(
        "the garbage collector to delete job owned",
        lambda: not exists(kube_cluster, kube_namespace, "job", "owned"),
    )
    # Its pods go with it (they are owned by the Job in turn).
    kube_cluster.wait_until(
        "the garbage collector to delete the pods of job owned",
        lambda: not job_pods(kube_cluster, kube_namespace, "owned"),
    )


def test_ttl_after_finished_removes_the_job(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    # Watched from before it exists, so its completion is seen however soon the TTL removes it.
    with watch(
        kube_cluster,
        kube_namespace,
        "jobs",
        "{.type} {.object.metadata.name} {.object.status.conditions[*].type}",
    ) as events:
        kube_cluster.apply(
            job_manifest("ttl", "print('short-lived')", ttlSecondsAfterFinished=1),
            namespace=kube_namespace,
        )
        seen = read_until(events, lambda e: e[:2] == ["DELETED", "ttl"])
    assert any(e[:2] == ["MODIFIED", "ttl"] and "Complete" in e[2:] for e in seen)
    assert not exists(kube_cluster, kube_namespace, "job", "ttl")


def test_nonzero_exit_fails_a_job_without_retries(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    kube_cluster.apply(
        job_manifest("boom", "import sys; print('failing on purpose'); sys.exit(3)"),
        namespace=kube_namespace,
    )
    cond = kube_cluster.wait_until(
        "job boom to finish", lambda: job_condition(kube_cluster, kube_namespace, "boom")
    )
    assert cond == "Failed"
    job = kube_cluster.get_json("job", "boom", namespace=kube_namespace)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    pods = job_pods(kube_cluster, kube_namespace, "boom")
    assert len(pods) == 1  # backoffLimit 0: no second attempt
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_pod_deleted_while_running_is_observed(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    code = "import time; print('started', flush=True); time.sleep(600)"
    kube_cluster.apply(job_manifest("victim", code), namespace=kube_namespace)

    def running_pod() -> str | None:
        for pod in job_pods(kube_cluster, kube_namespace, "victim"):
            statuses = pod["status"].get("containerStatuses", [])
            if statuses and "running" in statuses[0]["state"]:
                return str(pod["metadata"]["name"])
        return None

    pod = kube_cluster.wait_until("the pod of job victim to run", running_pod)
    # Watch the pod through the API while it is deleted, as an operator would.
    with watch(
        kube_cluster, kube_namespace, f"pod/{pod}", "{.type} {.object.metadata.deletionTimestamp}"
    ) as lines:
        assert next(lines)[0] == "ADDED"
        kube_cluster.kubectl("-n", kube_namespace, "delete", "pod", pod, "--wait=false")
        events = read_until(lines, lambda e: e[0] == "DELETED")
    # Before it went, the pod was seen marked for deletion: how "deleted while running" shows.
    assert any(e[0] == "MODIFIED" and len(e) == 2 for e in events)
    # The Job controller counts the lost pod as a failure, so backoffLimit 0 fails the Job.
    cond = kube_cluster.wait_until(
        "job victim to finish", lambda: job_condition(kube_cluster, kube_namespace, "victim")
    )
    assert cond == "Failed"
