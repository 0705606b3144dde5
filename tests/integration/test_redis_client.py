"""The Redis client kflow depends on honours asyncio cancellation (redis-py 8.0/8.1 do not)."""

from __future__ import annotations

import asyncio

import pytest

from kflow.store.connect import connect


@pytest.mark.parametrize("server", [pytest.param("redis_srv", marks=pytest.mark.redis),
                                    pytest.param("redis_cluster_srv",
                                                 marks=pytest.mark.rediscluster)])
async def test_a_cancelled_task_stops_even_inside_a_redis_command(
    server: str, request: pytest.FixtureRequest
) -> None:
    # The runner, the operator and the workers stop their loops by cancelling tasks; a client
    # that swallows the cancellation leaves them running (seen as a 60 s hang at exit).
    client = await connect(request.getfixturevalue(server).url)
    calls = 0

    async def busy_loop() -> None:
        nonlocal calls
        while calls < 20_000:
            await client.get("kflow-test:cancel")
            calls += 1

    survived = 0
    try:
        for _ in range(20):
            task = asyncio.create_task(busy_loop())
            await asyncio.sleep(0.005)
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
            if not task.done() or not task.cancelled():
                survived += 1
                calls = 20_000  # let a survivor end by itself
                await asyncio.wait([task], timeout=5.0)
            calls = 0
    finally:
        await client.aclose()
    assert survived == 0, f"{survived} of 20 cancelled tasks kept running inside redis calls"
