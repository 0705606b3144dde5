"""The local Kubernetes cluster of `tests/cluster`: locate it, start it, share it, run kubectl.

Starting and stopping run the repository's scripts (`tests/cluster/scripts`), so this part of
the kit needs a checkout (see `kflow.devkit.checkout`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.devkit.checkout import in_checkout

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.33.13")
COMPONENTS = (
    "etcd",
    "containerd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
# The first start on a new machine builds Kubernetes and the images; later ones take seconds.
UP_TIMEOUT_S = 3600


def cluster_dir() -> Path:
    return Path(os.environ.get("KFLOW_CLUSTER_DIR", "/var/lib/kflow-cluster"))


def cache_dir() -> Path:
    """Where the Go-built tools (Kubernetes, helm, CoreDNS, gitops-health) are kept."""
    return Path(os.environ.get("KFLOW_CACHE_DIR", Path.home() / ".cache" / "kflow"))


def bin_dir() -> Path:
    return cache_dir() / f"k8s-{K8S_VERSION}"


def run_script(
    name: str, *args: str, timeout: float | None = UP_TIMEOUT_S,
    env: dict[str, str] | None = None, capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run one of the cluster scripts (env: settings added to ours; timeout=None: no limit).

    Output is captured, or shown on the terminal with capture=False (a first build is long).
    """
    script = in_checkout("tests", "cluster", "scripts", name)
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def cluster_running(env: dict[str, str] | None = None) -> bool:
    return run_script("cluster-status.sh", "--quiet", timeout=60, env=env).returncode == 0


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; str() names the command and carries its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}{self.output}"


class ClusterUpError(RuntimeError):
    """`cluster-up.sh` failed; the message carries its output."""


@dataclass
class LocalCluster:
    """Handle on the running local cluster: kubeconfig, binaries, kubectl, components' logs."""

    kubeconfig: Path
    bin_dir: Path
    log_dir: Path = field(default_factory=lambda: cluster_dir() / "logs")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's own kubectl; on failure (check=True) the error carries its stderr."""
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def get_json(self, *args: str, namespace: str | None = None) -> Any:
        ns = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", *args, *ns, "-o", "json").stdout)

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=text)

    def wait_until(
        self, what: str, predicate: Callable[[], Any], timeout: float = 120,
        interval: float = 0.5,
    ) -> Any:
        """Poll predicate() until it returns a truthy value; fail naming `what` after timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(
            f"gave up waiting for {what} after {timeout:.0f}s\n{self.log_tails(20)}"
        )

    def log_tails(self, lines: int = 50) -> str:
        """The last lines of every component's log, for failure reports."""
        parts = []
        for name in COMPONENTS:
            path = self.log_dir / f"{name}.log"
            if not path.exists():
                parts.append(f"==> {path} (missing) <==")
                continue
            with path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 200 * lines))
                tail = f.read().decode(errors="replace").splitlines()[-lines:]
            parts.append(f"==> {path} <==\n" + "\n".join(tail))
        return "\n".join(parts)


def local_cluster() -> LocalCluster:
    """The handle on the cluster of cluster_dir() (whether it runs is not checked)."""
    return LocalCluster(kubeconfig=cluster_dir() / "kubeconfig", bin_dir=bin_dir())


def other_users() -> list[int]:
    """Live pids of other processes that registered as using the cluster."""
    users = cluster_dir() / "users"
    alive = []
    for entry in users.glob("*") if users.is_dir() else []:
        pid = int(entry.name) if entry.name.isdigit() else 0
        if pid and pid != os.getpid() and Path(f"/proc/{pid}").exists():
            alive.append(pid)
        elif pid != os.getpid():
            entry.unlink(missing_ok=True)
    return alive


@contextmanager
def shared_cluster() -> Iterator[LocalCluster]:
    """The local cluster: reused when running, else started here and stopped on exit.

    The user registers under cluster_dir()/users while inside; one that started the cluster
    stops it only when no other live user remains. KFLOW_KEEP_CLUSTER=1 leaves it running in
    any case. Raises ClusterUpError when the cluster cannot be brought up.
    """
    was_running = cluster_running()
    # cluster-up also reuses a running cluster, refreshing the images if the source changed.
    up = run_script("cluster-up.sh")
    if up.returncode != 0:
        raise ClusterUpError(f"make cluster-up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    marker = cluster_dir() / "users" / str(os.getpid())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        yield local_cluster()
    finally:
        marker.unlink(missing_ok=True)
        keep = os.environ.get("KFLOW_KEEP_CLUSTER") == "1"
        if not was_running and not keep and not other_users():
            run_script("cluster-down.sh", timeout=300)


@contextmanager
def fresh_namespace(cluster: LocalCluster) -> Iterator[str]:
    """A new namespace whose default service account exists; deleted (not awaited) on exit."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    cluster.wait_until(
        f"service account default in namespace {name}",
        lambda: (
            cluster.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode
            == 0
        ),
    )
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
