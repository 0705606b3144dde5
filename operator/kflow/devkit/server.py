"""The kflow API for tools and tests: `kflow server` as a host process against the local
cluster, tokens of ServiceAccounts bound to a role, and a large seeded flow to browse.

A 100,000-node Flow cannot be a Kubernetes object (etcd stores no request over 1.5 MiB), so
`seed_flow` makes a tiny Flow in a namespace no operator watches and writes the big graph
into Redis under that Flow's uid through the Engine, with some nodes completed and failed:
the API (and the CLI and the web view over it) then browse it as they would a real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from kflow.api.ids import QueueId
from kflow.api.models import Flow
from kflow.cli.redis_server import free_port
from kflow.devkit.checkout import REPO
from kflow.devkit.cluster import cluster_dir, cluster_running
from kflow.devkit.operator import Kube, OperatorWorld, local_kube
from kflow.devkit.redis import redis_server
from kflow.engine import Engine, FlowRef
from kflow.graph import compile_flow
from kflow.store.connect import connect

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
SEED_QUEUE = "seed"
BUILT_IN_ROLES = ("view", "edit", "admin")


class SeededFlow(TypedDict):
    """What `seed_flow` made: the Flow's name and uid, and its graph's node counts."""

    name: str
    uid: str
    nodes: int
    completed: int
    failed: int


@dataclass
class HostServer:
    """`python -m kflow.server` (what `kflow server` runs) on a free loopback port, with the
    admin kubeconfig of the local cluster and the given Redis; `.url` is its base URL."""

    redis_url: str
    kubeconfig: Path = field(default_factory=lambda: cluster_dir() / "kubeconfig")
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra KFLOW_SERVER_* settings
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostServer:
        self.port = self.port or free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KFLOW_REDIS_URL": self.redis_url,
               "PYTHONPATH": f"{REPO / 'operator'}", **self.env}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kflow.server", "--listen", "127.0.0.1", "--port",
             str(self.port)], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kflow server exited with {self.proc.returncode} "
                                   f"(log: {self.log_path})")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"kflow server did not answer /healthz within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> HostServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def aggregate_roles(kube: Kube) -> None:
    """The chart's ClusterRoles that add flows and queues to the built-in view, edit and
    admin roles (charts/kflow/templates/aggregate-roles.yaml), applied without installing
    the chart: what `service_account_token(..., role="view")` needs on a bare cluster."""
    from kflow.devkit.install import helm_binary  # builds helm on first use

    rendered = subprocess.run(
        [helm_binary(), "template", "kflow-devkit", str(REPO / "charts" / "kflow"),
         "-n", "kflow-devkit", "--set", "redis.deploy=true",
         "--show-only", "templates/aggregate-roles.yaml"],
        capture_output=True, text=True, check=True, timeout=120).stdout
    kube("apply", "-f", "-", input=rendered)


def service_account_token(kube: Kube, namespace: str, name: str, role: str,
                          bind_namespace: str, *, duration: str = "1h") -> str:
    """A ServiceAccount `namespace/name` bound (RoleBinding `name-role` in `bind_namespace`)
    to the ClusterRole `role`, and a token for it (`kubectl create token`). For `view`,
    `edit` and `admin` the chart's aggregated ClusterRoles are applied first (idempotent),
    so they cover flows on a cluster where the chart is not installed."""
    if role in BUILT_IN_ROLES:
        aggregate_roles(kube)
    kube("create", "namespace", namespace, check=False)
    kube("create", "namespace", bind_namespace, check=False)
    kube("create", "serviceaccount", name, "-n", namespace, check=False)
    kube("create", "rolebinding", f"{name}-{role}", "-n", bind_namespace,
         f"--clusterrole={role}", f"--serviceaccount={namespace}:{name}", check=False)
    return kube("create", "token", name, "-n", namespace,
                f"--duration={duration}").stdout.strip()


def seed_spec(n_nodes: int, fanout: int) -> list[dict[str, Any]]:
    """One root over branches of `fanout` leaves each, `n_nodes` nodes in all. Leaves fail
    without failing the flow (onFailure: continueParent), so a seeded flow keeps running."""
    if n_nodes < 2 or fanout < 1:
        raise ValueError(f"a seeded flow needs n_nodes >= 2 and fanout >= 1, got {n_nodes}, "
                         f"{fanout}")
    leaves_left = n_nodes - 1
    branches: list[dict[str, Any]] = []
    b = 0
    while leaves_left > 0:
        width = min(fanout, leaves_left - 1) if leaves_left > 1 else 0
        children = [{"name": f"b{b}-leaf-{i}", "queue": SEED_QUEUE, "data": {"i": i},
                     "opts": {"onFailure": "continueParent"}} for i in range(width)]
        branches.append({"name": f"branch-{b}", "queue": SEED_QUEUE, "children": children})
        leaves_left -= width + 1
        b += 1
    return [{"name": "root", "queue": SEED_QUEUE, "children": branches}]


async def _seed_redis(redis_url: str, ref: FlowRef, nodes: list[dict[str, Any]],
                      completed: float, failed: float) -> dict[str, int]:
    compiled = compile_flow(Flow.model_validate({
        "metadata": {"name": ref.name, "namespace": ref.namespace},
        "spec": {"nodes": nodes}}))
    client = await connect(redis_url)
    try:
        engine = Engine(client)
        await engine.submit(ref, compiled)
        leaves = len(compiled.leaves)
        want_done, want_failed = int(leaves * completed), int(leaves * failed)
        queue = QueueId.of(ref.namespace, SEED_QUEUE)
        done = failed_n = 0
        while done + failed_n < want_done + want_failed:
            attempts = await engine.take(queue, 1000, owner="seed", lease_ms=3_600_000)
            if not attempts:
                break
            finishing = attempts[:max(0, want_done - done)]
            failing = attempts[len(finishing):len(finishing) + want_failed - failed_n]
            if finishing:
                await engine.complete_batch([(a.flow_id, a.node, a.token, {"node": a.node})
                                             for a in finishing])
            for a in failing:
                await engine.fail(a.flow_id, a.node, a.token, f"seeded failure of {a.node}\n"
                                  "Traceback: (seeded)")
            # The rest of the batch stays active (its lease lasts an hour): a running flow.
            done += len(finishing)
            failed_n += len(failing)
        return {"nodes": len(compiled.nodes), "completed": done, "failed": failed_n}
    finally:
        await client.aclose()


def seed_flow(redis_url: str, namespace: str, name: str, n_nodes: int = 100_000,
              fanout: int = 1000, *, kube: Kube | None = None, completed: float = 0.3,
              failed: float = 0.01) -> SeededFlow:
    """A Flow `namespace/name` whose graph in Redis has `n_nodes` nodes (see `seed_spec`):
    about `completed` of the leaves completed, `failed` failed, some active, the rest
    waiting. The namespace must be one no operator watches (nothing would run it anyway: no
    Queue `seed` exists)."""
    kube = kube or local_kube()
    if kube("get", "crd", "flows.kflow.dev", check=False).returncode != 0:
        OperatorWorld(kube, redis_url, Path(tempfile.gettempdir())).install_crds()
    kube("create", "namespace", namespace, check=False)
    flow = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": {"kflow.dev/seeded": f"{n_nodes} nodes in Redis"}},
            "spec": {"nodes": [{"name": "root", "queue": SEED_QUEUE}]}}
    kube("create", "-f", "-", input=json.dumps(flow))
    uid = kube.json("flow", name, "-n", namespace)["metadata"]["uid"]
    ref = FlowRef(uid=uid, namespace=namespace, name=name)
    counts = asyncio.run(_seed_redis(redis_url, ref, seed_spec(n_nodes, fanout), completed,
                                     failed))
    log.info("seeded Flow %s/%s (uid %s): %s", namespace, name, uid, counts)
    return SeededFlow(name=name, uid=uid, nodes=counts["nodes"],
                      completed=counts["completed"], failed=counts["failed"])


def big_flow_args(description: str, *, runs: str = "--runs") -> argparse.Namespace:
    """The options every bench of a seeded flow takes: --nodes, --fanout and how many runs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument(runs, type=int, default=7)
    return parser.parse_args()


@dataclass
class SeededServer:
    """A host `kflow server` over a private Redis holding one seeded Flow `big`, and the token
    of a ServiceAccount bound to `view` in its namespace."""

    kube: Kube
    namespace: str
    token: str
    flow: SeededFlow
    server: HostServer


@contextmanager
def seeded_server(purpose: str, n_nodes: int, fanout: int) -> Iterator[SeededServer]:
    """A fresh namespace `kflow-bench-<purpose>-…` with a `view` ServiceAccount, a seeded
    flow of `n_nodes` in a private redis-server, and `kflow server` on it; the namespace is
    deleted afterwards. Needs the local cluster (TokenReview, SubjectAccessReview, the Flow)."""
    if not cluster_running():
        raise RuntimeError("the local cluster is not running: make cluster-up")
    kube = local_kube()
    namespace = f"kflow-bench-{purpose}-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", namespace)
    try:
        token = service_account_token(kube, namespace, f"bench-{purpose}", "view", namespace)
        with redis_server() as redis:
            flow = seed_flow(redis.url, namespace, "big", n_nodes, fanout, kube=kube)
            with HostServer(redis.url) as server:
                yield SeededServer(kube, namespace, token, flow, server)
    finally:
        kube("delete", "namespace", namespace, "--wait=false", check=False)


@dataclass
class ProxiedApi:
    """The kflow API of a chart install, reached as a user reaches it: through the API
    server's service proxy with the kubeconfig's credentials for that hop, and the caller's
    own token in X-Kflow-Token (None: no token)."""

    namespace: str  # the release namespace
    service: str  # <fullname>-api
    token: str | None
    kubeconfig: Path = field(default_factory=lambda: cluster_dir() / "kubeconfig")

    def request(self, method: str, path: str, *, timeout: float = 30
                ) -> tuple[int, Any]:
        """(status, JSON body or text) of `method path` (path under the API's root)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(str(self.kubeconfig),  # type: ignore[no-untyped-call]
                                client_configuration=configuration)
        api = client.ApiClient(configuration)
        headers = dict(configuration.api_key) if configuration.api_key else {}
        headers = {"Authorization": headers["authorization"]} if "authorization" in headers \
            else {}
        if self.token:
            headers["X-Kflow-Token"] = self.token
        url = (f"{configuration.host}/api/v1/namespaces/{self.namespace}/services/"
               f"http:{self.service}:http/proxy{path}")
        answer = api.rest_client.pool_manager.request(method, url, headers=headers,
                                                      timeout=timeout)
        text = answer.data.decode()
        try:
            return answer.status, json.loads(text)
        except ValueError:
            return answer.status, text
