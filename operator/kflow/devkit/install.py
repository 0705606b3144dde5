"""kflow installed the way users install it: images built and loaded into the local cluster,
`helm install` of charts/kflow (operator and Redis as pods), the namespace's Redis Secret
made as the chart's NOTES tell users. Used by `make demo` and the installed-chart e2e tests.

Nothing here reaches into the pods' network: the kit reads Redis through `kubectl
port-forward` (a user's path too), and every pod runs on the cluster's own network.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.api.ids import FlowId
from kflow.devkit.checkout import in_checkout
from kflow.devkit.cluster import cluster_dir, run_script
from kflow.devkit.operator import Kube
from kflow.engine import Engine, NodeInfo
from kflow.store.connect import connect

RELEASE = "kflow"
NAMESPACE = "kflow-system"
# What the local cluster gets from tests/cluster/scripts/build-images.sh, as
# localhost/kflow-<name>:dev (pause, coredns and runner come with cluster-up).
IMAGES = ("operator", "runner", "examples", "redis")
INSTALL_TIMEOUT_S = 300


def helm_binary() -> str:
    """The helm CLI, built from its Go module on first use and cached."""
    built = run_script("build-helm.sh", timeout=1800)
    if built.returncode != 0:
        raise RuntimeError(f"building helm failed:\n{built.stderr[-3000:]}")
    return built.stdout.strip().splitlines()[-1]


def load_images(*names: str) -> None:
    """Build (when their sources changed) and load the images into the cluster's containerd."""
    for script, args in (("build-images.sh", names or IMAGES), ("import-images.sh", ())):
        done = run_script(script, *args, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"{script} {' '.join(args)} failed:\n"
                               f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def local_values(release: str, namespace: str) -> list[str]:
    """helm --set flags for the local cluster: its images, and a hostPath volume for Redis
    (the local cluster has no storage provisioner)."""
    volume = cluster_dir() / "volumes" / f"{namespace}-{release}-redis"
    return [
        "--set", "image.repository=localhost/kflow-operator",
        "--set", "image.tag=dev",
        "--set", "image.pullPolicy=Never",
        "--set", "tests.runnerImage.repository=localhost/kflow-runner",
        "--set", "tests.runnerImage.tag=dev",
        "--set", "redis.deploy=true",
        "--set", "redis.image=localhost/kflow-redis:dev",
        "--set", f"redis.persistence.hostPath={volume}",
        "--set", "redis.persistence.storageClass=-",
    ]


def _volume_dir(path: Path) -> None:
    """The hostPath directory, writable by the Redis container's uid (as the chart says)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 65532, 65532)


@dataclass
class Installation:
    """One helm release of charts/kflow on the local cluster."""

    kube: Kube
    helm: str
    release: str = RELEASE
    namespace: str = NAMESPACE
    values: list[str] = field(default_factory=list)  # extra helm flags (--set ...)
    log: Callable[[str], None] = lambda _: None

    @property
    def fullname(self) -> str:
        return self.release if "kflow" in self.release else f"{self.release}-kflow"

    def _helm(self, *args: str, timeout: float = INSTALL_TIMEOUT_S + 60,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(cluster_dir() / "kubeconfig")}
        done = subprocess.run([self.helm, *args], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    @property
    def volume_path(self) -> Path:
        return cluster_dir() / "volumes" / f"{self.namespace}-{self.release}-redis"

    @property
    def volume_name(self) -> str:
        """The chart's hostPath PersistentVolume (redis.persistence.hostPath)."""
        return f"{self.fullname}-redis-{self.namespace}"[:63].rstrip("-")

    def _reclaim_volume(self) -> None:
        """A kept volume whose claim went with an uninstall is Released and binds nothing;
        forgetting the old claim's uid lets the new claim of the same name take it back."""
        found = self.kube("get", "pv", self.volume_name, "-o", "json", check=False)
        if found.returncode == 0 and json.loads(found.stdout)["status"].get("phase") == "Released":
            self.kube("patch", "pv", self.volume_name, "--type", "json", "-p",
                      '[{"op": "remove", "path": "/spec/claimRef/uid"},'
                      ' {"op": "remove", "path": "/spec/claimRef/resourceVersion"}]')

    def install(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """helm install (or upgrade to these values), waiting for the pods to be Ready."""
        if self.kube("get", "pv", self.volume_name, check=False).returncode != 0:
            # No volume object: whatever the folder holds is from a cluster run that is gone
            # (each start has a fresh etcd); a new release starts from an empty Redis.
            shutil.rmtree(self.volume_path, ignore_errors=True)
        _volume_dir(self.volume_path)
        self._reclaim_volume()
        return self._helm(
            "upgrade", "--install", self.release, str(in_checkout("charts", "kflow")),
            "-n", self.namespace, "--create-namespace", "--wait",
            f"--timeout={INSTALL_TIMEOUT_S}s",
            *local_values(self.release, self.namespace), *self.values, *extra)

    def upgrade(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self._helm(
            "upgrade", self.release, str(in_checkout("charts", "kflow")), "-n", self.namespace,
            "--wait", f"--timeout={INSTALL_TIMEOUT_S}s",
            *local_values(self.release, self.namespace), *self.values, *extra)

    def uninstall(self) -> None:
        """helm uninstall: what the chart keeps (CRDs, the Redis volume and claim) stays."""
        self._helm("uninstall", self.release, "-n", self.namespace, "--wait",
                   f"--timeout={INSTALL_TIMEOUT_S}s", check=False)

    def purge(self) -> None:
        """Leave nothing of the release: uninstall, then its namespace (waited for), the kept
        volume and its directory. The CRDs stay (other releases may use them)."""
        self.uninstall()
        self.kube("delete", "namespace", self.namespace, "--ignore-not-found", "--wait=true",
                  check=False, timeout=180)
        self.kube("delete", "pv", self.volume_name, "--ignore-not-found", check=False)
        shutil.rmtree(self.volume_path, ignore_errors=True)

    def redis_password(self) -> str:
        secret = self.kube.json("secret", f"{self.fullname}-redis", "-n", self.namespace)
        return base64.b64decode(secret["data"]["password"]).decode()

    def redis_url(self) -> str:
        """The bundled Redis's address inside the cluster (its Service's DNS name)."""
        return f"redis://{self.fullname}-redis.{self.namespace}.svc:6379/0"

    def make_pod_secret(self, namespace: str, secret: str = "kflow-redis") -> None:
        """The namespace's Redis Secret, made the way NOTES.txt tells users to with tenants
        off (redis.tenants=off); with tenants on the operator makes it."""
        self.kube("-n", namespace, "delete", "secret", secret, "--ignore-not-found")
        self.kube("-n", namespace, "create", "secret", "generic", secret,
                  f"--from-literal=url={self.redis_url()}",
                  f"--from-literal=password={self.redis_password()}")

    def operator_pods(self) -> list[dict[str, Any]]:
        """The release's operator pods, leaving out those being deleted."""
        pods = self.kube.json("pods", "-n", self.namespace, "-l",
                              f"app.kubernetes.io/instance={self.release},"
                              "app.kubernetes.io/component=operator")
        return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]

    def redis_pod(self) -> dict[str, Any]:
        pods = self.kube.json("pods", "-n", self.namespace, "-l",
                              f"app.kubernetes.io/instance={self.release},"
                              "app.kubernetes.io/component=redis")
        running = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
        if not running:
            raise LookupError(f"no Redis pod of release {self.release}")
        return dict(running[0])

    def read_flow(self, namespace: str, uid: str
                  ) -> tuple[dict[str, NodeInfo], list[dict[str, str]]]:
        """(node -> NodeInfo, the flow's event stream) from the bundled Redis, read through
        a port-forward as a user could."""

        async def read(url: str) -> tuple[dict[str, NodeInfo], list[dict[str, str]]]:
            client = await connect(url)
            try:
                engine = Engine(client)
                flow_id = FlowId.of(namespace, uid)
                return (dict(await engine.node_infos(flow_id)),
                        await engine.events(flow_id, 100_000))
            finally:
                await client.aclose()

        with self.redis_forwarded() as url:
            return asyncio.run(read(url))

    @contextmanager
    def redis_forwarded(self) -> Iterator[str]:
        """`kubectl port-forward` to the bundled Redis: yields a redis:// URL on loopback."""
        with self.port_forwarded(f"service/{self.fullname}-redis", 6379) as port:
            yield f"redis://:{self.redis_password()}@127.0.0.1:{port}/0"

    @contextmanager
    def port_forwarded(self, target: str, port: int) -> Iterator[int]:
        """`kubectl port-forward` to `target` ("service/x", "pod/y") in the release's
        namespace: yields the local port on loopback."""
        proc = subprocess.Popen(
            [self.kube.kubectl, "--kubeconfig", str(self.kube.kubeconfig), "-n", self.namespace,
             "port-forward", target, f":{port}", "--address", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            local = None
            while local is None and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                found = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
                local = int(found.group(1)) if found else None
            if local is None:
                raise RuntimeError(f"kubectl port-forward to {target} failed")
            yield local
        finally:
            proc.terminate()
            proc.wait(timeout=10)
