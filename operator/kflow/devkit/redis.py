"""Private Redis for tools and tests: one redis-server, or a Redis Cluster of several masters.

Both are built on `kflow.cli.redis_server`, the one way kflow starts a redis-server (the
same as `kflow run --local`).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kflow.cli.redis_server import free_port, private_redis, start, stop

CLUSTER_OK_TIMEOUT_S = 30.0


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
    """One private redis-server on a free loopback port, stopped on exit."""
    with private_redis() as url:
        port = urlsplit(url).port
        assert port is not None
        yield RedisServer(url=url, port=port)


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisCluster]:
    """A real Redis Cluster of `masters` masters, no replicas, stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="kflow-rcluster-") as tmp:
        ports = tuple(free_port() for _ in range(masters))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for port in ports:
                procs.append(start(port, Path(tmp) / str(port), "--cluster-enabled", "yes",
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
            stop(procs)


def _wait_cluster_ok(ports: tuple[int, ...]) -> None:
    deadline = time.monotonic() + CLUSTER_OK_TIMEOUT_S
    while time.monotonic() < deadline:
        states = [
            subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"],
                           capture_output=True, text=True).stdout
            for p in ports
        ]
        if all("cluster_state:ok" in s for s in states):
            return
        time.sleep(0.2)
    raise RuntimeError(f"Redis Cluster did not reach cluster_state:ok within "
                       f"{CLUSTER_OK_TIMEOUT_S:.0f} s")
