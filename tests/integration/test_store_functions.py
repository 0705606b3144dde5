"""The scripts as Redis Functions: one library per script group, loaded once per server (again
when the server lost it), a fallback to EVALSHA where functions are refused, and no state of
one call left for the next (the library's includes run once, not per call)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError, ResponseError

from kflow.api.states import FlowPhase
from kflow.devkit.redis import RedisServer, redis_server
from kflow.engine import Engine
from kflow.store import scripts as scripts_module
from kflow.store.acl import apply_tenant_user, tenant_user
from kflow.store.connect import connect
from kflow.store.scripts import libraries
from tests.integration.engine_kit import NS, build, new_ref, node, qid, run_flow

pytestmark = pytest.mark.asyncio


async def on_every_master(client: Any, *command: Any) -> list[Any]:
    if isinstance(client, RedisCluster):
        return [await client.execute_command(*command, target_nodes=[n])
                for n in client.get_primaries()]
    return [await client.execute_command(*command)]


async def command_calls(client: Any) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT, summed over the masters."""
    total: dict[str, int] = {}
    for stats in await on_every_master(client, "INFO", "commandstats"):
        for key, value in stats.items():
            name = key.removeprefix("cmdstat_")
            total[name] = total.get(name, 0) + int(value["calls"])
    return total


async def library_names(client: Any) -> list[set[str]]:
    """The function libraries each master holds."""
    out = []
    for reply in await on_every_master(client, "FUNCTION", "LIST"):
        out.append({(lib[b"library_name"] if b"library_name" in lib else lib["library_name"])
                    if isinstance(lib, dict) else _name(lib) for lib in reply})
    return [{n.decode() if isinstance(n, bytes) else n for n in names} for names in out]


def _name(entry: list[Any]) -> Any:
    return entry[entry.index(b"library_name") + 1]


async def fresh_server(client: Any) -> None:
    """As after a restart without persistence: no libraries, statistics from zero."""
    await on_every_master(client, "FUNCTION", "FLUSH")
    await on_every_master(client, "CONFIG", "RESETSTAT")


async def run_small_flow(engine: Engine) -> None:
    ref = new_ref()
    assert await engine.submit(ref, build(node("a"), node("b"), node("root", "a", "b")))
    await run_flow(engine, ref.id, {"work"}, {})
    assert (await engine.snapshot(ref.id)).phase is FlowPhase.SUCCEEDED


async def test_scripts_run_as_functions_from_libraries_loaded_once(engine: Engine) -> None:
    client = engine.store.redis
    await fresh_server(client)
    await run_small_flow(engine)
    await run_small_flow(engine)
    calls = await command_calls(client)
    masters = len(await on_every_master(client, "PING"))
    assert calls.get("fcall", 0) >= 10 and "evalsha" not in calls, calls
    # A cluster client finds a call's slot from its keys itself, without asking a server
    # (COMMAND GETKEYS: one more round trip for every call).
    assert "command|getkeys" not in calls, calls
    # Two libraries (flow, queue) loaded on each master the first time a call missed them.
    assert calls["function|load"] == 2 * masters
    names = {lib.name for lib in libraries().values()}
    assert all(names <= held for held in await library_names(client))


async def test_a_lost_library_is_loaded_again_even_under_a_pipelined_batch(
        engine: Engine) -> None:
    refs = [new_ref(f"f{i}") for i in range(3)]
    for ref in refs:
        assert await engine.submit(ref, build(node("only")))
    await fresh_server(engine.store.redis)  # lost after the flows were added
    # One take starts three flows' nodes: three start calls in one pipeline on one server.
    taken = await engine.take(qid(), 10, owner="t")
    assert sorted(a.flow_uid for a in taken) == sorted(r.uid for r in refs)
    outcomes = await engine.complete_batch([(a.flow_id, a.node, a.token, 1) for a in taken])
    assert all(o.accepted for o in outcomes)
    for ref in refs:
        assert (await engine.snapshot(ref.id)).phase is FlowPhase.SUCCEEDED
    calls = await command_calls(engine.store.redis)
    assert "evalsha" not in calls and calls["fcall"] >= 6, calls


async def test_two_versions_of_the_library_live_side_by_side(engine: Engine) -> None:
    """A rolling upgrade: the old operator's library and the new one on one server, each
    version calling its own functions."""
    client = engine.store.redis
    await fresh_server(client)
    await run_small_flow(engine)
    lib = libraries()["queue"]
    digest = lib.name.rsplit("_", 1)[1]
    other = lib.source.replace(digest, "0" * len(digest))
    await on_every_master(client, "FUNCTION", "LOAD", other)
    try:
        for held in await library_names(client):
            assert {lib.name, f"kflow_queue_{'0' * len(digest)}"} <= held
        await run_small_flow(engine)  # this version still runs its own
        keys = engine.store.queue(qid("elsewhere")).all
        # The other version's forget runs on its own (a queue that holds nothing: 0 left).
        assert await client.fcall(f"kflow_{'0' * len(digest)}_queue_forget", len(keys),
                                  *keys) in (b"0", "0")
    finally:
        await on_every_master(client, "FUNCTION", "DELETE", f"kflow_queue_{'0' * len(digest)}")


async def test_no_state_of_one_call_reaches_the_next(engine: Engine) -> None:
    """The includes' per-call state (the meta memo, the spec cache, the count deltas, the
    clock) starts empty on every call, even after a call that failed half way."""
    first, second = new_ref("first"), new_ref("second")
    for ref in (first, second):
        assert await engine.submit(ref, build(node("a"), node("root", "a")))
    store = engine.store
    # A call that fails after it read the meta and changed a state in memory: node "a" is
    # ready but its spec is gone.
    await store.redis.hdel(store.flow(first.id).spec, "a")
    with pytest.raises(ResponseError, match="has no spec"):
        await store.scripts.run("flow/start", store.flow(first.id).all, ["t", "0", "a", "tok"])
    counts_before = await store.redis.hgetall(store.flow(second.id).counts)
    # The next call, on the other flow, answers with its own name and writes its own counts.
    for ref in (second, first):
        reply = await store.scripts.run("flow/suspend", store.flow(ref.id).all, [])
        assert f'"{ref.name}"' in (reply.decode() if isinstance(reply, bytes) else reply)
    assert await store.redis.hgetall(store.flow(second.id).counts) == counts_before


@pytest.fixture
async def tenant_setup(redis_srv: RedisServer) -> AsyncIterator[tuple[Engine, Engine]]:
    """The operator (the default user) and a namespace's user, on one server."""
    admin_client = aredis.Redis.from_url(redis_srv.url)
    await admin_client.flushall()
    await apply_tenant_user(admin_client, "kflow", NS, ["s3cret"])
    tenant_client = await connect(redis_srv.url, username=tenant_user("kflow", NS),
                                  password="s3cret")
    try:
        yield Engine(admin_client), Engine(tenant_client, start_exits=False)
    finally:
        await tenant_client.aclose()
        await admin_client.execute_command("ACL", "DELUSER", tenant_user("kflow", NS))
        await admin_client.aclose()


async def test_a_tenant_calls_functions_but_never_loads_them(
        tenant_setup: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    admin, tenant = tenant_setup
    ref = new_ref()
    assert await admin.submit(ref, build(node("a"), node("root", "a")))
    await fresh_server(admin.store.redis)
    # FUNCTION LOAD is server-wide: a tenant could replace the code every tenant runs.
    with pytest.raises(NoPermissionError):
        await tenant.store.redis.execute_command("FUNCTION", "LOAD",
                                                 libraries()["queue"].source)
    # With the library gone, the tenant's worker goes on by EVALSHA ...
    [a] = await tenant.take(qid(), 10, owner="w")
    assert not tenant.store.scripts.use_functions
    assert (await tenant.complete(ref.id, "a", a.token, 1)).accepted
    assert (await command_calls(admin.store.redis)).get("evalsha", 0) >= 2
    # ... and back to functions once the operator loaded them and the retry time passed.
    await admin.store.scripts.load()
    monkeypatch.setattr(scripts_module, "FUNCTIONS_RETRY_S", 0.0)
    await admin.store.redis.config_resetstat()
    [root] = await tenant.take(qid(), 10, owner="w")
    assert (await tenant.complete(ref.id, "root", root.token, 2)).accepted
    assert tenant.store.scripts.use_functions
    calls = await command_calls(admin.store.redis)
    assert calls["fcall"] >= 2 and "evalsha" not in calls, calls
    assert (await admin.snapshot(ref.id)).phase is FlowPhase.SUCCEEDED


@pytest.fixture(scope="module")
def own_server() -> Iterator[RedisServer]:
    with redis_server() as srv:
        yield srv


async def test_reads_and_deletion_run_when_redis_is_out_of_memory(own_server: RedisServer
                                                                  ) -> None:
    """As before functions: reads run, a write that needs memory is refused whole, deleting
    a flow (which frees memory) runs to its end."""
    client = aredis.Redis.from_url(own_server.url)
    engine = Engine(client)
    try:
        ref = new_ref()
        assert await engine.submit(ref, build(node("a"), node("b"), node("root", "a", "b")))
        taken = await engine.take(qid(), 10, owner="t")
        await client.config_set("maxmemory", 1)  # every write that needs memory is refused
        await client.config_resetstat()
        try:
            with pytest.raises(ResponseError, match="maxmemory"):
                await engine.complete(ref.id, taken[0].node, taken[0].token, 1)
            # Reading (the graph, a node's inputs) runs as functions flagged no-writes.
            assert {n.name for n in await engine.graph_nodes(ref.id)} == {"a", "b", "root"}
            [inputs] = await engine.inputs_many(ref.id, ["root"])
            assert inputs[0] == {}  # nothing completed: the refused call changed nothing
            assert (await command_calls(client)).get("fcall", 0) >= 2
            await engine.delete(ref.id)
        finally:
            await client.config_set("maxmemory", 0)
        assert not await client.keys(f"*{ref.uid}*")
    finally:
        await client.aclose()
