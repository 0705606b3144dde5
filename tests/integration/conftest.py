"""Fixtures of the store/engine suites: an Engine on a real Redis, then on a real cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from kflow.engine import Engine
from kflow.store.connect import connect


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("cluster", marks=pytest.mark.rediscluster)])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    """An Engine on a flushed single redis-server, then on a flushed 3-master cluster, each
    through the client kflow itself connects with (`kflow.store.connect`)."""
    server = "redis_srv" if request.param == "redis" else "redis_cluster_srv"
    client: Any = await connect(request.getfixturevalue(server).url)
    await client.flushall()
    try:
        yield Engine(client)
    finally:
        await client.aclose()
