"""Given/When/Then helpers for operator e2e tests: namespace, operator process, flows, Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RUNNER_IMAGE = os.environ.get("KFLOW_RUNNER_IMAGE", "localhost/kflow-runner:dev")
# The repository is mounted into every test pod, so pods run the SDK and node code of this
# checkout (the image brings Python and kflow's dependencies).
POD_REPO = "/work"


@dataclass
class Kube:
    """kubectl against the test cluster (from the kube_cluster fixture, or a kubeconfig)."""

    run: Callable[..., subprocess.CompletedProcess[str]]
    kubeconfig: Path
    kubectl: str = "kubectl"

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
    def run(*args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    return Kube(run=run, kubeconfig=kubeconfig, kubectl=kubectl)


# ---- manifests -------------------------------------------------------------------------
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
    """A Job-mode Queue running `tests.e2e.operator_pods.nodes:<function>`, or a shell command."""
    if shell is not None:
        template = pod_template(command=["/bin/sh", "-c", shell])
    else:
        template = pod_template([f"tests.e2e.operator_pods.nodes:{function}"])
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
    """An examples/ file with its Queue templates adapted to the test cluster (host network,
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


# ---- the operator process --------------------------------------------------------------
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


# ---- the scenario object ---------------------------------------------------------------
TERMINAL = ("Succeeded", "Failed", "Cancelled")


@dataclass
class Scenario:
    """One test's world: a namespace with the Redis Secret, an operator, helpers to inspect."""

    kube: Kube
    namespace: str
    redis_url: str
    operator: OperatorProcess
    prefix: str = "kflow"
    _watchers: list[JobWatch] = field(default_factory=list)

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
        return _run(self._with_engine(lambda e: e.node_infos(self.uid(name))))

    def results(self, name: str) -> dict[str, Any]:
        return {n: info.result for n, info in self.nodes(name).items()}

    def redis_keys(self, uid: str) -> list[str]:
        async def scan() -> list[str]:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
            try:
                return [k async for k in client.scan_iter(match=f"*{uid}*", count=1000)]
            finally:
                await client.aclose()

        return _run(scan())

    def open_gate(self, uid: str) -> None:
        """Let `nodes.gated` succeed for this flow from now on."""
        async def set_key() -> None:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(self.redis_url)
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
        self._watchers.append(watch)
        return watch

    async def _with_engine(self, use: Callable[[Any], Any]) -> Any:
        import redis.asyncio as aioredis

        from kflow.engine import Engine

        client = aioredis.Redis.from_url(self.redis_url)
        try:
            return await use(Engine(client, prefix=self.prefix))
        finally:
            await client.aclose()


def _run(coro: Any) -> Any:
    return asyncio.run(coro) if asyncio.iscoroutine(coro) else coro


class JobWatch:
    """`kubectl get jobs --watch`: Job events in etcd order, for counting concurrent Jobs."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [self.kube.kubectl, "--kubeconfig", str(self.kube.kubeconfig), "get", "jobs", "-n",
             self.namespace, "--watch", "--output-watch-events", "-o", "json"],
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
    """Builds Scenarios: CRDs installed once, one namespace and one operator per test."""

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

    def scenario(self, *, start: bool = True, **settings: str) -> Iterator[Scenario]:
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
            **{f"KFLOW_{k.upper()}": v for k, v in settings.items()},
        }
        operator = OperatorProcess(env=env, log_path=self.tmp / f"operator-{namespace}.log")
        scenario = Scenario(self.kube, namespace, self.redis_url, operator)
        if start:
            operator.start()
        try:
            yield scenario
        finally:
            for watch in scenario._watchers:
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


# ---- pytest fixtures (imported by the test modules) -------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Kube:
    """The local cluster's kubectl: the kube_cluster fixture when loaded, else KUBECONFIG.

    KFLOW_E2E_KUBECONFIG=PATH skips the fixture's `make cluster-up` and uses that cluster.
    """
    direct = os.environ.get("KFLOW_E2E_KUBECONFIG")
    if direct:
        kubectl = Path(os.environ.get("KFLOW_CACHE_DIR", Path.home() / ".cache" / "kflow")) \
            / f"k8s-{os.environ.get('K8S_VERSION', 'v1.33.13')}" / "kubectl"
        return kubectl_from_kubeconfig(Path(direct),
                                       str(kubectl) if kubectl.exists() else "kubectl")
    try:
        cluster = request.getfixturevalue("kube_cluster")
    except pytest.FixtureLookupError:
        kubeconfig = Path(os.environ.get("KUBECONFIG", "/var/lib/kflow-cluster/kubeconfig"))
        if not kubeconfig.exists():
            pytest.skip("no local cluster: run `make cluster-up` (kubeconfig not found)")
        return kubectl_from_kubeconfig(kubeconfig)
    kubectl = Path(cluster.bin_dir) / "kubectl"
    return Kube(run=cluster.kubectl, kubeconfig=Path(cluster.kubeconfig),
                kubectl=str(kubectl) if kubectl.exists() else "kubectl")


@pytest.fixture(scope="session")
def operator_world(kube: Kube, redis_srv: Any,
                   tmp_path_factory: pytest.TempPathFactory) -> OperatorWorld:
    world = OperatorWorld(kube, redis_srv.url, tmp_path_factory.mktemp("operator"))
    world.install_crds()
    return world


@pytest.fixture
def scenario(operator_world: OperatorWorld) -> Iterator[Scenario]:
    """A fresh namespace with the Redis Secret and a running operator watching it."""
    yield from operator_world.scenario()
