"""The operator as a real process against the local cluster, and the helpers to drive it.

`OperatorWorld` installs the CRDs once and hands out `Scenario`s: a namespace with the Redis
Secret and its own operator process, with helpers to submit Queues and Flows, wait for a
phase, and read the nodes back from Redis (as Argo's e2e fixtures do with Given/When/Then).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kflow.api.ids import FlowId
from kflow.devkit.checkout import REPO
from kflow.devkit.cluster import LocalCluster, bin_dir, cluster_dir, cluster_running
from kflow.devkit.redis import redis_server

T = TypeVar("T")
TERMINAL = ("Succeeded", "Failed", "Cancelled")


@dataclass
class Kube:
    """kubectl against a cluster (a LocalCluster's own, or one for a kubeconfig)."""

    run: Callable[..., subprocess.CompletedProcess[str]]
    kubeconfig: Path
    kubectl: str = "kubectl"

    @classmethod
    def of_cluster(cls, cluster: LocalCluster) -> Kube:
        """The cluster's kubectl (its errors are KubectlError, carrying stderr)."""
        kubectl = Path(cluster.bin_dir) / "kubectl"
        return cls(run=cluster.kubectl, kubeconfig=Path(cluster.kubeconfig),
                   kubectl=str(kubectl) if kubectl.exists() else "kubectl")

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run(*args, input=input, check=check, timeout=timeout)

    def json(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json").stdout)

    def apply(self, docs: list[dict[str, Any]] | dict[str, Any], namespace: str) -> None:
        if isinstance(docs, dict):
            docs = [docs]
        # JSON, not YAML: kubectl's YAML 1.1 parser reads a bare key `n` or `y` as a boolean.
        listing = {"apiVersion": "v1", "kind": "List", "items": docs}
        self("apply", "-n", namespace, "-f", "-", input=json.dumps(listing))

    def submit(self, docs: list[dict[str, Any]], namespace: str) -> None:
        """Apply the Queues (updated in place if they exist) and create the Flows, as a user
        submits them: `kubectl apply` refuses a Flow over 256 KiB (its last-applied annotation
        copies the whole object); `kubectl create` takes up to etcd's 1.5 MiB."""
        flows = [doc for doc in docs if doc.get("kind") == "Flow"]
        others = [doc for doc in docs if doc.get("kind") != "Flow"]
        if others:
            self.apply(others, namespace)
        if flows:
            listing = {"apiVersion": "v1", "kind": "List", "items": flows}
            self("create", "-n", namespace, "-f", "-", input=json.dumps(listing))


def kubectl_from_kubeconfig(kubeconfig: Path, kubectl: str = "kubectl") -> Kube:
    """kubectl for `kubeconfig`; a failed command (check=True) raises AssertionError."""
    def run(*args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    return Kube(run=run, kubeconfig=kubeconfig, kubectl=kubectl)


def local_kube() -> Kube:
    """kubectl with the local cluster's admin kubeconfig."""
    return kubectl_from_kubeconfig(cluster_dir() / "kubeconfig", str(bin_dir() / "kubectl"))


@dataclass
class OperatorProcess:
    """`python -m kflow.kube` as a real process, watching one namespace."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== operator start #{self.starts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "kflow.kube"], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Scenario:
    """One namespace's world: the Redis Secret, an operator, helpers to submit and inspect."""

    kube: Kube
    namespace: str
    redis_url: str
    operator: OperatorProcess
    prefix: str = "kflow"
    watchers: list[JobWatch] = field(default_factory=list)

    def apply(self, *docs: dict[str, Any]) -> None:
        """Submit Queues and Flows into the namespace (Flows are created, see Kube.submit)."""
        self.kube.submit(list(docs), self.namespace)

    def get_flow(self, name: str) -> dict[str, Any]:
        return self.kube.json("flow", name, "-n", self.namespace)  # type: ignore[no-any-return]

    def wait_phase(self, name: str, phases: tuple[str, ...] = TERMINAL,
                   timeout: float = 240) -> dict[str, Any]:
        """Wait until the Flow's status.phase is one of `phases`; returns the Flow."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.get_flow(name)
            if (body.get("status") or {}).get("phase") in phases:
                return body
            time.sleep(0.5)
        raise AssertionError(
            f"Flow {self.namespace}/{name} did not reach {phases} within {timeout}s; "
            f"status={json.dumps(body.get('status'))}\n--- operator log ---\n"
            f"{self.operator.log_tail()}\n--- jobs ---\n"
            f"{self.kube('get', 'jobs,pods', '-n', self.namespace, check=False).stdout}")

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{self.operator.log_tail()}")

    def uid(self, name: str) -> str:
        return str(self.get_flow(name)["metadata"]["uid"])

    def nodes(self, name: str) -> dict[str, Any]:
        """node name -> NodeInfo, read from Redis through the engine."""
        uid = self.uid(name)

        async def read() -> dict[str, Any]:
            from kflow.engine import Engine

            client = self._client()
            try:
                return dict(await Engine(client, prefix=self.prefix).node_infos(
                    FlowId.of(self.namespace, uid)))
            finally:
                await client.aclose()

        return _run(read())

    def results(self, name: str) -> dict[str, Any]:
        return {n: info.result for n, info in self.nodes(name).items()}

    def redis_keys(self, uid: str) -> list[str]:
        async def scan() -> list[str]:
            client = self._client(decode_responses=True)
            try:
                return [k async for k in client.scan_iter(match=f"*{uid}*", count=1000)]
            finally:
                await client.aclose()

        return _run(scan())

    def open_gate(self, uid: str) -> None:
        """Let `nodes.gated` succeed for this flow from now on."""
        async def set_key() -> None:
            client = self._client()
            try:
                await client.set(f"kflow-test:gate:{uid}", "1", ex=3600)
            finally:
                await client.aclose()

        _run(set_key())

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.kube.json("jobs", "-n", self.namespace).get("items") or [])

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        items = self.kube.json("events", "-n", self.namespace).get("items") or []
        return [e for e in items if reason is None or e.get("reason") == reason]

    def watch_jobs(self) -> JobWatch:
        watch = JobWatch(self.kube, self.namespace)
        watch.start()
        self.watchers.append(watch)
        return watch

    def _client(self, *, decode_responses: bool = False) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(self.redis_url, decode_responses=decode_responses)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class JobWatch:
    """`kubectl get jobs --watch` (or another resource): events in etcd order, for counting
    concurrent Jobs or seeing every pod a flow made, even those deleted since."""

    def __init__(self, kube: Kube, namespace: str, resource: str = "jobs") -> None:
        self.kube = kube
        self.namespace = namespace
        self.resource = resource
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [self.kube.kubectl, "--kubeconfig", str(self.kube.kubeconfig), "get", self.resource,
             "-n", self.namespace, "--watch", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(1.0)  # let the watch open before the scenario starts

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        buffer = ""
        depth = 0
        for line in self._proc.stdout:
            buffer += line
            depth += line.count("{") - line.count("}")
            if depth == 0 and buffer.strip():
                try:
                    event = json.loads(buffer)
                    self.events.append((event["type"], event["object"]))
                except ValueError:
                    pass
                buffer = ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)

    def max_running(self, queue: str) -> int:
        """Most Jobs of `queue` alive and unfinished at the same moment, in etcd's order."""
        alive: set[str] = set()
        most = 0
        for kind, job in self.events:
            labels = job["metadata"].get("labels") or {}
            if labels.get("kflow.dev/queue") != queue:
                continue
            name = job["metadata"]["name"]
            conditions = (job.get("status") or {}).get("conditions") or []
            finished = any(c.get("type") in ("Complete", "Failed", "SuccessCriteriaMet",
                                             "FailureTarget") and c.get("status") == "True"
                           for c in conditions)
            if kind == "DELETED" or finished:
                alive.discard(name)
            else:
                alive.add(name)
            most = max(most, len(alive))
        return most

    def made(self) -> dict[str, dict[str, Any]]:
        """Every object the watch saw created, by name (deleted ones too)."""
        return {obj["metadata"]["name"]: obj for kind, obj in self.events if kind == "ADDED"}

    def on_the_host(self) -> list[str]:
        """Pods (resource "pods") the watch saw made with the host network or a host mount."""
        return [name for name, pod in self.made().items()
                if pod["spec"].get("hostNetwork")
                or any("hostPath" in v for v in pod["spec"].get("volumes") or [])]

    def created(self, queue: str | None = None, node: str | None = None) -> set[str]:
        names = set()
        for kind, job in self.events:
            labels = job["metadata"].get("labels") or {}
            if kind != "ADDED":
                continue
            if queue is not None and labels.get("kflow.dev/queue") != queue:
                continue
            if node is not None and (job["metadata"].get("annotations") or {}).get(
                    "kflow.dev/node") != node:
                continue
            names.add(job["metadata"]["name"])
        return names


def _strip_costly_rules(node: Any, key: str = "") -> None:
    if isinstance(node, dict):
        if key in ("opts", "defaults"):
            node.pop("x-kubernetes-validations", None)
        for k, v in node.items():
            _strip_costly_rules(v, k)
    elif isinstance(node, list):
        for item in node:
            _strip_costly_rules(item, key)


def new_namespace(prefix: str = "kflow-e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass
class OperatorWorld:
    """Builds Scenarios: CRDs installed once, one namespace and one operator per scenario."""

    kube: Kube
    redis_url: str
    tmp: Path

    def install_crds(self) -> None:
        for path in sorted((REPO / "crds").glob("*.yaml")):
            applied = self.kube("apply", "-f", str(path), check=False)
            if applied.returncode != 0 and "rule cost exceeds budget" in applied.stderr:
                # The API server refused CEL rules as too costly: install the CRD without its
                # opts rules (the operator validates them anyway) so the operator can be tested.
                doc = yaml.safe_load(path.read_text())
                _strip_costly_rules(doc)
                self.kube("apply", "-f", "-", input=yaml.safe_dump(doc))
            elif applied.returncode != 0:
                raise AssertionError(f"kubectl apply -f {path} failed: {applied.stderr}")
        for crd in ("flows.kflow.dev", "queues.kflow.dev"):
            self.kube("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")

    @contextmanager
    def scenario(self, *, start: bool = True, **settings: str) -> Iterator[Scenario]:
        """A fresh namespace with the Redis Secret and an operator watching it (started unless
        start=False; `settings` become KFLOW_<NAME> variables); all removed on exit."""
        namespace = new_namespace()
        self.kube("create", "namespace", namespace)
        self.kube("create", "secret", "generic", "kflow-redis", "-n", namespace,
                  f"--from-literal=url={self.redis_url}")
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kube.kubeconfig),
            "KFLOW_REDIS_URL": self.redis_url,
            "KFLOW_NAMESPACES": namespace,
            "KFLOW_STANDALONE": "true",
            "PYTHONPATH": f"{REPO / 'operator'}:{REPO}",
            # The local cluster's pods (kflow.devkit.manifests.pod_template) reach Redis on the
            # host's loopback and mount this checkout: the pod policy must allow both.
            "KFLOW_POLICY_ALLOW_HOST_NETWORK": "true",
            "KFLOW_POLICY_ALLOW_HOST_PATH": "true",
            **{f"KFLOW_{k.upper()}": v for k, v in settings.items()},
        }
        operator = OperatorProcess(env=env, log_path=self.tmp / f"operator-{namespace}.log")
        scenario = Scenario(self.kube, namespace, self.redis_url, operator)
        if start:
            operator.start()
        try:
            yield scenario
        finally:
            for watch in scenario.watchers:
                watch.stop()
            # Flows and Queues carry finalizers: delete them while the operator still runs.
            self.kube("delete", "flows,queues", "--all", "-n", namespace, "--wait=true",
                      "--timeout=60s", check=False, timeout=90)
            operator.stop()
            for kind in ("flows", "queues"):
                names = self.kube("get", kind, "-n", namespace, "-o", "name",
                                  check=False).stdout.split()
                for obj in names:
                    self.kube("patch", obj, "-n", namespace, "--type=merge", "-p",
                              '{"metadata":{"finalizers":[]}}', check=False)
            self.kube("delete", "namespace", namespace, "--wait=false", check=False)


@contextmanager
def bench_world() -> Iterator[OperatorWorld]:
    """What an operator benchmark runs in: the running local cluster with kflow's CRDs, and a
    private Redis for the operators its scenarios start. Exits with status 2 when the local
    cluster is not running."""
    if not cluster_running():
        print("the local cluster is not running: make cluster-up", file=sys.stderr)
        raise SystemExit(2)
    kube = local_kube()
    with redis_server() as srv, tempfile.TemporaryDirectory(prefix="kflow-bench-") as tmp:
        world = OperatorWorld(kube, srv.url, Path(tmp))
        world.install_crds()
        yield world
