"""Open the async Redis client every kflow process uses: single server or cluster, one pool."""

from __future__ import annotations

from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

# Connections per process (per cluster node with Redis Cluster). Callers that run more
# concurrent commands than this wait for a free connection instead of failing: redis-py's
# default pool raises MaxConnectionsError past 100, which under load turned into lost leases.
MAX_CONNECTIONS = 64


class RedisTarget(Protocol):
    """Where Redis is and how to talk to it; `kflow.settings.RedisSettings` is one.

    The store takes these as values and reads no environment itself.
    """

    @property
    def url(self) -> str: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def tls_ca_file(self) -> str | None: ...
    @property
    def connect_timeout(self) -> float | None: ...
    @property
    def socket_timeout(self) -> float | None: ...


async def connect_to(target: RedisTarget, *, max_connections: int = MAX_CONNECTIONS) -> Any:
    """A client for the Redis `target` describes (see `connect`)."""
    return await connect(target.url, username=target.username, password=target.password,
                         tls=target.tls, tls_ca_file=target.tls_ca_file,
                         connect_timeout=target.connect_timeout,
                         socket_timeout=target.socket_timeout, max_connections=max_connections)


async def connect(url: str, *, username: str | None = None, password: str | None = None,
                  tls: bool = False, tls_ca_file: str | None = None,
                  connect_timeout: float | None = None,
                  socket_timeout: float | None = None,
                  max_connections: int = MAX_CONNECTIONS) -> Any:
    """A client for `url`: `RedisCluster` when the server runs in cluster mode.

    Asking the server (INFO cluster) instead of taking a flag means the same URL works for a
    single Redis and for any node of a Redis Cluster. TLS comes from a `rediss://` URL or
    from `tls=True`; `tls_ca_file` names the CA bundle that signed the server's certificate.
    Both timeouts are in seconds; None (the default) waits as long as the OS does.
    """
    extra: dict[str, Any] = {"password": password} if password else {}
    if username:
        extra["username"] = username
    if tls and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    if tls_ca_file:
        extra["ssl_ca_certs"] = tls_ca_file
    if connect_timeout is not None:
        extra["socket_connect_timeout"] = connect_timeout
    # No read timeout by default: while redis-py has one armed, a task cancelled inside a
    # command swallows the CancelledError and keeps running
    # (tests/integration/test_redis_client.py). Dead peers are found by TCP keepalive and the
    # periodic health check instead.
    extra |= {"socket_timeout": socket_timeout, "socket_keepalive": True,
              "health_check_interval": 30}
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                                     timeout=None, **extra)
    client = aioredis.Redis(connection_pool=pool)
    try:
        info = await client.info("cluster")
    except Exception:
        await client.aclose()
        raise
    if not info.get("cluster_enabled"):
        return client
    await client.aclose()
    # The cluster client has no blocking pool; its per-node limit is raised well above what
    # one process issues at once so that it never raises under a burst.
    cluster = RedisCluster.from_url(url, max_connections=max(1024, max_connections), **extra)
    await cluster.initialize()
    return cluster
