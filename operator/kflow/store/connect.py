"""Open the async Redis client every kflow process uses: single server or cluster, one pool."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

# Connections per process (per cluster node with Redis Cluster). Callers that run more
# concurrent commands than this wait for a free connection instead of failing: redis-py's
# default pool raises MaxConnectionsError past 100, which under load turned into lost leases.
MAX_CONNECTIONS = 64


async def connect(url: str, *, password: str | None = None, tls: bool = False,
                  tls_ca_file: str | None = None, max_connections: int = MAX_CONNECTIONS) -> Any:
    """A client for `url`: `RedisCluster` when the server runs in cluster mode.

    Asking the server (INFO cluster) instead of taking a flag means the same URL works for a
    single Redis and for any node of a Redis Cluster. TLS comes from a `rediss://` URL or
    from `tls=True`; `tls_ca_file` names the CA bundle that signed the server's certificate.
    """
    extra: dict[str, Any] = {"password": password} if password else {}
    if tls and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    if tls_ca_file:
        extra["ssl_ca_certs"] = tls_ca_file
    # No read timeout: while redis-py has one armed, a task cancelled inside a command swallows
    # the CancelledError and keeps running (tests/integration/test_redis_client.py). Dead
    # peers are found by TCP keepalive and the periodic health check instead.
    extra |= {"socket_timeout": None, "socket_keepalive": True, "health_check_interval": 30}
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
