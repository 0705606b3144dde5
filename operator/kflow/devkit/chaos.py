"""Faults for the chaos suite: a Redis that dies and comes back from its AOF, a cut Redis
connection, a restarted API server, a killed worker, and the side-effect ledger nodes write.

Every fault undoes itself on exit (a `with` block), even when the test inside fails: the API
server and the loopback rules are shared with everyone else on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from kflow.cli.redis_server import free_port, start, stop
from kflow.devkit.cluster import cluster_dir
from kflow.devkit.operator import JobWatch, Kube

# The second loopback address the chaos Redis also listens on: only the operator uses it, so
# dropping it cuts the operator off while node pods (host network, 127.0.0.1) keep working.
OPERATOR_ADDR = "127.0.0.2"
# The side-effect ledger's keys, outside every kflow prefix (nodes.py in tests/chaos writes them).
LEDGER = "chaos-ledger"


@dataclass
class AofRedis:
    """A redis-server with `appendonly yes, appendfsync everysec` on a fixed port and folder,
    listening on 127.0.0.1 (pods, tests) and OPERATOR_ADDR (the operator)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def operator_url(self) -> str:
        return f"redis://{OPERATOR_ADDR}:{self.port}/0"

    def start(self) -> None:
        self.proc = start(self.port, self.workdir, "--appendonly", "yes",
                          "--appendfsync", "everysec", "--bind", "127.0.0.1", OPERATOR_ADDR)

    def kill9(self) -> None:
        """SIGKILL: no shutdown save; what comes back is what the AOF held."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop([self.proc])

    def keys(self, prefix: str) -> list[str]:
        client = redis.Redis(port=self.port, decode_responses=True)
        try:
            return sorted(client.scan_iter(match=f"{prefix}*", count=1000))
        finally:
            client.close()


@contextmanager
def aof_redis() -> Iterator[AofRedis]:
    with tempfile.TemporaryDirectory(prefix="kflow-chaos-redis-") as tmp:
        server = AofRedis(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@dataclass
class Execution:
    """One run of a node's code, as the node recorded it after its side effect."""

    node: str
    attempt: int
    pidns: str  # the pid namespace of the process that ran it: which pod (container)
    at: float  # time.time() of the side effect (pods share the host's clock)


@dataclass
class Ledger:
    """What the test's node code did, read from the counter Redis (never the faulted one)."""

    url: str

    def executions(self, flow_uid: str) -> list[Execution]:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            raw = cast(list[str], client.lrange(f"{LEDGER}:{flow_uid}", 0, -1))
        finally:
            client.close()
        return [Execution(**json.loads(item)) for item in raw]

    def started(self, flow_uid: str) -> int:
        client = redis.Redis.from_url(self.url)
        try:
            return int(cast(bytes | None, client.get(f"{LEDGER}:{flow_uid}:started")) or 0)
        finally:
            client.close()

    def counts(self, flow_uid: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self.executions(flow_uid):
            counts[run.node] = counts.get(run.node, 0) + 1
        return counts


@contextmanager
def redis_cut(port: int, addr: str = OPERATOR_ADDR) -> Iterator[None]:
    """DROP (no reset) every packet to and from `addr:port` on loopback, both directions."""
    tag = f"kflow-chaos-{uuid.uuid4().hex[:8]}"
    rules = [["-o", "lo", "-p", "tcp", "-d", addr, "--dport", str(port)],
             ["-o", "lo", "-p", "tcp", "-s", addr, "--sport", str(port)]]
    added: list[list[str]] = []
    try:
        for rule in rules:
            spec = [*rule, "-m", "comment", "--comment", tag, "-j", "DROP"]
            subprocess.run(["iptables", "-w", "-I", "OUTPUT", *spec], check=True,
                           capture_output=True, timeout=30)
            added.append(spec)
        yield
    finally:
        for spec in added:
            subprocess.run(["iptables", "-w", "-D", "OUTPUT", *spec], check=False,
                           capture_output=True, timeout=30)


def rules_tagged(prefix: str = "kflow-chaos-") -> list[str]:
    """The OUTPUT rules a chaos fault left behind (none, after every `redis_cut`)."""
    out = subprocess.run(["iptables", "-w", "-S", "OUTPUT"], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    return [line for line in out.splitlines() if prefix in line]


def kill9_worker(namespace: str, queue: str) -> str:
    """SIGKILL one `kflow worker` process of the queue (from the host, like the OOM killer);
    returns the pid namespace it ran in, as Execution.pidns records it."""
    found = subprocess.run(["pgrep", "-f", f"worker --queue {namespace}/{queue} "],
                           capture_output=True, text=True, check=False).stdout.split()
    if not found:
        raise AssertionError(f"no `kflow worker` process of queue {namespace}/{queue}")
    pid = int(found[0])
    pidns = os.readlink(f"/proc/{pid}/ns/pid")
    os.kill(pid, signal.SIGKILL)
    return pidns


@dataclass
class ApiServer:
    """The local cluster's kube-apiserver process, as cluster-up.sh started it."""

    pid_file: Path = field(default_factory=lambda: Path(
        os.environ.get("KFLOW_RUN_DIR", "/run/kflow-cluster")) / "pids" / "kube-apiserver.pid")
    log_file: Path = field(default_factory=lambda: cluster_dir() / "logs" / "kube-apiserver.log")
    stop_s: float = 0.0  # how long the last down() took to see the process gone

    def pid(self) -> int:
        pid = int(self.pid_file.read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() != "kube-apiserver":
            raise AssertionError(f"{self.pid_file}: pid {pid} is not a kube-apiserver")
        return pid

    @contextmanager
    def down(self) -> Iterator[None]:
        """Stop the API server (SIGTERM, SIGKILL after 3 s) and start it again on exit with
        the same command line, environment and log, recording its pid where cluster-down.sh
        looks for it."""
        pid = self.pid()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        env = dict(line.split(b"=", 1) for line in
                   Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in line)
        cwd = os.readlink(f"/proc/{pid}/cwd")
        try:
            began = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            # Its graceful shutdown waits ~20 s for long requests; others share it: cut it short.
            if not _gone(pid, 3):
                os.kill(pid, signal.SIGKILL)
                _gone(pid, 10)
            self.stop_s = time.monotonic() - began
            yield
        finally:
            with self.log_file.open("ab") as log:
                proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            self.pid_file.write_text(f"{proc.pid}\n")


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


class LastingWatch(JobWatch):
    """A JobWatch that opens the watch again when kubectl's ends (the API server restarted);
    the listing it starts with repeats objects already seen, which made() and created() merge."""

    def __init__(self, kube: Kube, namespace: str, resource: str = "jobs") -> None:
        super().__init__(kube, namespace, resource)
        self._stopping = False

    def _read(self) -> None:
        while True:
            super()._read()
            if self._stopping:
                return
            time.sleep(1.0)
            if self._stopping:
                return
            self._proc = subprocess.Popen(
                [self.kube.kubectl, "--kubeconfig", str(self.kube.kubeconfig), "get",
                 self.resource, "-n", self.namespace, "--watch", "--output-watch-events",
                 "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> None:
        self._stopping = True
        super().stop()


def flow_labels(obj: dict[str, Any]) -> bool:
    """Whether a Kubernetes object carries a kflow.dev/ label (kflow made it)."""
    return any(k.startswith("kflow.dev/") for k in (obj["metadata"].get("labels") or {}))
