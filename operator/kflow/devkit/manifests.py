"""Queue, Flow and pod-template manifests for the local cluster, and examples adapted to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from kflow.devkit.checkout import REPO

RUNNER_IMAGE = os.environ.get("KFLOW_RUNNER_IMAGE", "localhost/kflow-runner:dev")
# The repository is mounted into every pod, so pods run the SDK and node code of this
# checkout (the image brings Python and kflow's dependencies).
POD_REPO = "/work"
# The node functions queue(name, function) runs: a module of the mounted checkout, imported
# in the pods only (the demo's, benches' and tests' Jobs share it).
POD_NODES = "tests.e2e.operator_pods.nodes"


def pod_template(args: list[str] | None = None, *, command: list[str] | None = None,
                 extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """A runner pod: host network (Redis is on the host's loopback), the repo mounted."""
    container: dict[str, Any] = {
        "name": "main",
        "image": RUNNER_IMAGE,
        "imagePullPolicy": "Never",
        "env": [{"name": "PYTHONPATH", "value": f"{POD_REPO}/operator:{POD_REPO}"},
                *({"name": k, "value": v} for k, v in (extra_env or {}).items())],
        "volumeMounts": [{"name": "repo", "mountPath": POD_REPO, "readOnly": True}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
    }
    if command is not None:
        container["command"] = command
    if args is not None:
        container["args"] = args
    return {"spec": {
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "terminationGracePeriodSeconds": 5,
        "containers": [container],
        "volumes": [{"name": "repo", "hostPath": {"path": str(REPO), "type": "Directory"}}],
    }}


def queue(name: str, function: str | None = None, *, concurrency: int | None = None,
          shell: str | None = None, rate: tuple[int, str] | None = None) -> dict[str, Any]:
    """A Job-mode Queue running `<POD_NODES>:<function>`, or a shell command."""
    if shell is not None:
        template = pod_template(command=["/bin/sh", "-c", shell])
    else:
        template = pod_template([f"{POD_NODES}:{function}"])
    spec: dict[str, Any] = {"mode": "Job", "template": template}
    if concurrency is not None:
        spec["concurrency"] = concurrency
    if rate is not None:
        spec["rateLimit"] = {"max": rate[0], "per": rate[1]}
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": name},
            "spec": spec}


def flow(name: str, nodes: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow", "metadata": {"name": name},
            "spec": {"nodes": nodes, **spec}}


def runnable_examples(path: Path) -> list[dict[str, Any]]:
    """An examples/ file with its Queue templates adapted to the local cluster (host network,
    repo mount); the flows and the node code are used as they are."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc.get("kind") != "Queue":
            continue
        tmpl = doc["spec"].setdefault("template", {"spec": {"containers": [{}]}})
        original = tmpl["spec"]["containers"][0]
        command = original.get("command") or []
        args = list(original.get("args") or [])
        if command[:1] == ["kflow-run"]:
            args, command = [*command[1:], *args], None
        fresh = pod_template(args or None, command=command or None)
        doc["spec"]["template"] = fresh
    return docs
