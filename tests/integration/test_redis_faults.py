"""kflow's Redis client against a real redis-server that hangs, restarts or loses a reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kflow.api.ids import QueueId
from kflow.engine import Engine
from kflow.kube.dispatch import Dispatchers
from kflow.kube.queues import queue_info
from kflow.store.connect import connect
from kflow.store.outage import RedisOutage
from tests.integration.engine_kit import Stopped, build, new_ref, node, take_all, take_node
from tests.integration.faulty_redis import (  # noqa: F401
    OwnRedis,
    assert_outage_logged_once,
    lossy_proxy,
    own_redis_fixture,
    wait_until,
)

pytestmark = pytest.mark.redis

# A hang guard for the calls under test, far above the timeouts they are configured with: a
# call that returns at all (value or error) passes it; only a hang trips it.
HANG_GUARD_S = 60.0


async def test_a_command_to_a_hung_server_fails_after_the_socket_timeout(
        own_redis: OwnRedis) -> None:
    # A frozen server keeps its TCP connections open and acknowledged, like a half-open
    # connection: only the client's own timeout ends the wait (it used to wait forever).
    client = await connect(own_redis.url, socket_timeout=0.5, retries=1)
    try:
        await client.set("k", "v")
        own_redis.freeze(True)
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(client.get("k"), HANG_GUARD_S)
        own_redis.freeze(False)
        assert await client.get("k") == b"v"  # the client recovers once the server does
    finally:
        own_redis.freeze(False)
        await client.aclose()


@pytest.mark.slow
async def test_a_connection_cut_without_a_reset_fails_in_seconds_not_hours(
        own_redis: OwnRedis) -> None:
    # An iptables DROP on the server's port: packets vanish, nobody sends a reset, like a
    # network cut. With no reply timeout at all, only the TCP settings (TCP_USER_TIMEOUT,
    # keepalive) can end the wait; the kernel's defaults would take 15 min to 2 h.
    client = await connect(own_redis.url, socket_timeout=None, retries=0)
    rule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(own_redis.port), "-j", "DROP"]
    try:
        await client.set("k", "v")
        subprocess.run(["iptables", "-w", "-A", *rule], check=True)
        with pytest.raises((RedisConnectionError, RedisTimeoutError)):
            await asyncio.wait_for(client.get("k"), HANG_GUARD_S)
    finally:
        subprocess.run(["iptables", "-w", "-D", *rule], check=False)
        await client.aclose()


async def test_a_connection_that_never_opens_fails_after_the_connect_timeout() -> None:
    # A listening socket whose accept backlog is full drops new handshakes: the connect hangs
    # until the client gives up.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            with pytest.raises((RedisConnectionError, RedisTimeoutError)):
                await asyncio.wait_for(connect(f"redis://127.0.0.1:{port}/0",
                                               connect_timeout=0.5, retries=0), HANG_GUARD_S)
        finally:
            for filler in fillers:
                filler.close()


async def test_pooled_connections_survive_a_restart_of_the_server(own_redis: OwnRedis) -> None:
    client = await connect(own_redis.url)
    try:
        await client.set("k", "before")  # the pool now holds a connection to the old process
        own_redis.kill()
        own_redis.start()
        assert await client.set("k", "after")  # no error reaches the caller
        assert await client.get("k") == b"after"
    finally:
        await client.aclose()


async def test_a_command_sent_during_a_short_outage_succeeds_when_the_server_is_back(
        own_redis: OwnRedis) -> None:
    client = await connect(own_redis.url, retries=40, retry_backoff_base=0.05,
                           retry_backoff_cap=0.5)
    try:
        await client.set("k", "v")
        own_redis.kill()
        command = asyncio.ensure_future(client.set("k", "during"))
        await asyncio.sleep(1.0)
        assert not command.done()  # it is waiting (backing off), not failed
        own_redis.start()
        assert await asyncio.wait_for(command, HANG_GUARD_S)
        assert await client.get("k") == b"during"
    finally:
        await client.aclose()


async def test_a_completion_whose_reply_was_lost_is_applied_once(own_redis: OwnRedis) -> None:
    # The dangerous retry: the server ran the completion, the reply never came back, the
    # client sends it again. The attempt token fences it: one completion, one parent dispatch.
    async with lossy_proxy(own_redis.port) as proxy:
        client = await connect(proxy.url)
        try:
            engine = Engine(client)
            ref = new_ref()
            await engine.submit(ref, build(node("parent", "child"), node("child")))
            child = await take_node(engine, "child")
            # A refused completion first, so that the server knows the script: the reply lost
            # is then the one of the completion that ran, not a NOSCRIPT.
            stale = await engine.complete(child.flow_id, "child", "stale-token", None)
            assert not stale.accepted
            proxy.lose_reply_to(child.token.encode())
            outcome = await asyncio.wait_for(
                engine.complete(child.flow_id, "child", child.token, {"paid": 1}),
                HANG_GUARD_S)
            assert proxy.lost == 1
            assert not outcome.accepted  # the retry was refused: the first one counted
            infos = await engine.node_infos(child.flow_id)
            assert infos["child"].state == "completed"
            assert infos["child"].result == {"paid": 1}
            events = await engine.events(child.flow_id)
            assert [e for e in events if e.get("type") == "completed"
                    and e.get("node") == "child"] != []
            assert len([e for e in events if e.get("type") == "completed"
                        and e.get("node") == "child"]) == 1
            # The parent it made ready is handed out, once.
            taken = [a.node for a in await take_all(engine)]
            taken += [a.node for a in await take_all(engine)]
            assert taken == ["parent"]
        finally:
            await client.aclose()



async def test_a_redis_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
        own_redis: OwnRedis, caplog: pytest.LogCaptureFixture) -> None:
    # Three queues' dispatch loops meet the outage several times each; the log says it twice.
    client = await connect(own_redis.url, retries=1, retry_backoff_cap=0.1)
    engine = Engine(client, prefix="outage")
    dispatchers = Dispatchers(engine, identity="test", batch=10, lease_ms=60_000,
                              idle_recheck=0.1, outage=RedisOutage(max_wait=0.3))
    template = {"template": {"spec": {"containers": [{"name": "main", "image": "runner"}]}}}
    queues = [QueueId("ns", f"q{i}") for i in range(3)]
    for queue_id in queues:
        dispatchers.queues[queue_id] = queue_info("ns", queue_id.name, template)
    calls = {"housekeep": 0}

    async def launch(queue: Any, attempt: Any) -> None:
        raise AssertionError("nothing is ready: nothing to launch")

    async def housekeep(queue_id: QueueId) -> None:
        calls["housekeep"] += 1

    stopped = Stopped()
    caplog.set_level(logging.INFO)
    loops = [asyncio.ensure_future(dispatchers.run(q, stopped, launch, housekeep))
             for q in queues]
    try:
        await asyncio.sleep(0.3)
        own_redis.kill()
        await wait_until(lambda: dispatchers.outage.down, "the dispatchers to see the outage")
        seen = len(caplog.records)
        await asyncio.sleep(2.0)  # every loop meets the outage again and again meanwhile
        own_redis.start()
        await wait_until(lambda: not dispatchers.outage.down, "the dispatchers to see Redis back")
    finally:
        stopped.set()
        await asyncio.gather(*loops)
        await client.aclose()
    messages = assert_outage_logged_once(caplog.records)
    assert len(messages) - seen <= 1  # the outage itself logged nothing more, only the end
