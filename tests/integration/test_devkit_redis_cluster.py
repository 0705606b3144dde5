"""The test suite's private Redis Cluster comes up even when a port it picked is taken."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis

from kflow.devkit import redis as devkit_redis
from kflow.devkit.redis import redis_cluster


@pytest.fixture
def held_bus_port() -> Iterator[int]:
    """A listening socket on a port another process could hold; yields the client port
    whose cluster bus port (port + 10000) it is."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # an ephemeral port: above 32767 on Linux
        sock.listen()
        yield int(sock.getsockname()[1]) - 10000


def test_a_cluster_node_whose_bus_port_is_taken_gets_other_ports(
        held_bus_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # A CI run lost every cluster test at once: one node's bus port (port + 10000) was in
    # use, the node exited at start, and the session's cluster fixture failed. The first
    # port offered here is such a port.
    real = devkit_redis.free_port
    offered = iter([held_bus_port])
    monkeypatch.setattr(devkit_redis, "free_port",
                        lambda **kw: next(offered, None) or real(**kw))
    with redis_cluster(3) as cluster:
        assert held_bus_port not in cluster.ports
        client = redis.Redis(port=cluster.ports[0])
        try:
            assert client.execute_command("CLUSTER", "INFO").decode().startswith(
                "cluster_state:ok")
        finally:
            client.close()
