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

from kflow.cli.redis_server import free_port, port_taken, private_redis, start, stop

CLUSTER_OK_TIMEOUT_S = 30.0
NODE_START_ATTEMPTS = 5  # per node, when the ports it was given turn out to be taken


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
        procs: list[subprocess.Popen[bytes]] = []
        try:
            ports = _start_nodes(masters, Path(tmp), procs)
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            _wait_cluster_ok(ports)
            yield RedisCluster(url=f"redis://127.0.0.1:{ports[0]}/0", ports=ports)
        finally:
            stop(procs)


def _start_nodes(masters: int, folder: Path, procs: list[subprocess.Popen[bytes]]
                 ) -> tuple[int, ...]:
    """Start `masters` cluster nodes (appended to `procs`) on ports whose bus ports (port +
    10000) are free too; a node that finds a port taken meanwhile (another process bound it
    after it was chosen) is started again on others, a bounded number of times."""
    ports: list[int] = []
    for _ in range(masters):
        for attempt in range(1, NODE_START_ATTEMPTS + 1):
            # Never one of this cluster's own: its started nodes listen on both their ports.
            port = free_port(bus=True)
            try:
                procs.append(start(port, folder / str(port), "--cluster-enabled", "yes",
                                   "--cluster-config-file", "nodes.conf",
                                   "--cluster-node-timeout", "5000"))
            except RuntimeError as exc:
                if not port_taken(exc) or attempt == NODE_START_ATTEMPTS:
                    raise
                continue
            ports.append(port)
            break
    return tuple(ports)


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
