"""Start real redis-server processes (single or a 3-master cluster) on free loopback ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A free loopback port low enough that a cluster node's bus port (port + 10000) is valid."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= 55535:
            return port


def _wait_ping(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not answer PING within 15 s")


def _start(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(log), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _wait_ping(port, proc, log)
    return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


@dataclass(frozen=True)
class RedisServer:
    url: str
    port: int


@dataclass(frozen=True)
class RedisCluster:
    url: str  # any one node; cluster clients discover the rest
    ports: tuple[int, ...]


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server, stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="kflow-redis-") as tmp:
        port = free_port()
        proc = _start(port, Path(tmp))
        try:
            yield RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port)
        finally:
            _stop([proc])


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisCluster]:
    """A real Redis Cluster of `masters` masters, no replicas, stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="kflow-rcluster-") as tmp:
        ports = tuple(free_port() for _ in range(masters))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for port in ports:
                procs.append(_start(port, Path(tmp) / str(port), "--cluster-enabled", "yes",
                                    "--cluster-config-file", "nodes.conf",
                                    "--cluster-node-timeout", "5000"))
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            _wait_cluster_ok(ports)
            yield RedisCluster(url=f"redis://127.0.0.1:{ports[0]}/0", ports=ports)
        finally:
            _stop(procs)


def _wait_cluster_ok(ports: tuple[int, ...]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [
            subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"],
                           capture_output=True, text=True).stdout
            for p in ports
        ]
        if all("cluster_state:ok" in s for s in states):
            return
        time.sleep(0.2)
    raise RuntimeError("Redis Cluster did not reach cluster_state:ok within 30 s")
