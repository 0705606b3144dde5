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


@pytest.mark.redis
async def test_a_pipelines_replies_already_received_are_read_without_a_timer_each(
        redis_srv: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-py arms an asyncio timer for every reply it reads; kflow's connection takes a
    # reply the parser already holds straight away, errors and all.
    import redis.asyncio.connection as connection_module
    from redis.exceptions import ResponseError

    timers = 0
    armed = connection_module.async_timeout  # type: ignore[attr-defined]

    def counting(delay: float | None) -> object:
        nonlocal timers
        timers += 1
        return armed(delay)

    client = await connect(redis_srv.url)  # type: ignore[attr-defined]
    try:
        await client.set("kflow-test:text", "not a number")
        monkeypatch.setattr(connection_module, "async_timeout", counting)
        pipe = client.pipeline(transaction=False)
        for i in range(100):
            if i == 50:
                pipe.incr("kflow-test:text")  # fails on its own, the others still answer
            else:
                pipe.echo(f"reply {i}")
        replies = await pipe.execute(raise_on_error=False)
        assert [r for i, r in enumerate(replies) if i != 50] == \
            [f"reply {i}".encode() for i in range(100) if i != 50]
        assert isinstance(replies[50], ResponseError)
        assert timers < 20, f"{timers} timers for 100 replies"
        assert await client.get("kflow-test:text") == b"not a number"  # and it goes on
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_pooled_connection_is_checked_without_a_timer_and_stale_data_still_caught(
        redis_srv: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before every command the pool asks whether the connection holds unread data (a reply
    # nobody read, or the server's close); redis-py answers by reading with a zero timeout.
    import redis._parsers.hiredis as hiredis_parser
    from redis.asyncio import BlockingConnectionPool

    timers = 0
    armed = hiredis_parser.async_timeout

    def counting(delay: float | None) -> object:
        nonlocal timers
        timers += 1
        return armed(delay)

    # No retries: a command sent on a dead connection would fail, not be sent again.
    client = await connect(redis_srv.url, max_connections=1,  # type: ignore[attr-defined]
                           retries=0)
    try:
        await client.set("kflow-test:checked", "fresh")
        monkeypatch.setattr(hiredis_parser, "async_timeout", counting)
        for _ in range(100):
            assert await client.get("kflow-test:checked") == b"fresh"
        assert timers == 0, f"{timers} timers for 100 checkouts"

        # A connection handed back with a reply unread: the next command must not read it.
        pool: BlockingConnectionPool = client.connection_pool
        conn = await pool.get_connection()
        await conn.send_command("ECHO", "stale reply")
        await asyncio.sleep(0.1)  # the reply has arrived, unread
        await pool.release(conn)
        assert await client.get("kflow-test:checked") == b"fresh"

        # A connection the server closed: the next command opens a new one.
        conn = await pool.get_connection()
        await conn.send_command("CLIENT", "ID")
        own_id = await conn.read_response()
        await pool.release(conn)
        killer = await connect(redis_srv.url)  # type: ignore[attr-defined]
        try:
            await killer.execute_command("CLIENT", "KILL", "ID", own_id)
        finally:
            await killer.aclose()
        await asyncio.sleep(0.1)  # the close has reached this side
        assert await client.get("kflow-test:checked") == b"fresh"
    finally:
        await client.aclose()
