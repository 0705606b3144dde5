"""Fixtures of the store/engine suites: an Engine on a real Redis, then on a real cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster

from kflow.engine import Engine


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("cluster", marks=pytest.mark.rediscluster)])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    """An Engine on a flushed single redis-server, then on a flushed 3-master cluster."""
    client: Any
    if request.param == "redis":
        client = aredis.Redis.from_url(request.getfixturevalue("redis_srv").url)
    else:
        client = RedisCluster.from_url(request.getfixturevalue("redis_cluster_srv").url)
    await client.flushall()
    try:
        yield Engine(client)
    finally:
        await client.aclose()
