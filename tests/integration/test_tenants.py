"""One Redis, many tenants: a namespace's ACL user runs its own nodes and workers, and gets
NOPERM on every key of another namespace, directly and through kflow's scripts."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from kflow.api import FlowId, QueueId
from kflow.api.models import Flow
from kflow.engine import Engine, FlowRef
from kflow.graph import compile_flow
from kflow.sdk.job import Job
from kflow.sdk.worker import Worker, WorkerOptions
from kflow.store.acl import apply_tenant_user, check_admin, script_commands, tenant_commands
from kflow.store.connect import connect
from tests.integration.engine_kit import build, node

A, B = "team-a", "team-b"
LUA = Path(__file__).parents[2] / "operator" / "kflow" / "store" / "lua"


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("cluster", marks=pytest.mark.rediscluster)])
async def admin(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Engine, str]]:
    """The operator's view: an Engine as the `default` user (an ACL administrator), and the
    URL the tenants connect to."""
    client: Any
    if request.param == "redis":
        url = request.getfixturevalue("redis_srv").url
        client = aredis.Redis.from_url(url)
    else:
        url = request.getfixturevalue("redis_cluster_srv").url
        client = RedisCluster.from_url(url)
    await client.flushall()
    try:
        yield Engine(client), url
    finally:
        await client.aclose()


async def tenant(url: str, namespace: str, password: str) -> Engine:
    """An Engine as the namespace's user, connected the way pods and workers connect."""
    client = await connect(url, username=f"kflow-ns-{namespace}", password=password)
    return Engine(client, start_exits=False)  # as `kflow worker` and `kflow-run` make it


async def on_a_node(client: Any, *command: Any) -> Any:
    """A command without keys, on the server (or one node of the cluster)."""
    if isinstance(client, RedisCluster):
        return await client.execute_command(*command, target_nodes=[client.get_default_node()])
    return await client.execute_command(*command)


async def flow_of(engine: Engine, namespace: str, name: str) -> FlowRef:
    ref = FlowRef(uid=f"{name}-uid", namespace=namespace, name=name)
    await engine.submit(ref, build(node("sum", "x", "y"), node("x", data={"v": 2}),
                                   node("y", data={"v": 3})))
    return ref


async def state_of(engine: Engine, ref: FlowRef) -> Any:
    snap = await engine.snapshot(ref.id)
    infos = await engine.node_infos(ref.id)
    queue = await engine.queue_depth(QueueId(ref.namespace, "work"))
    return snap.phase, snap.counts, {n: (i.state, i.attempt, i.result, i.progress)
                                     for n, i in infos.items()}, queue


def test_every_command_of_every_script_is_granted() -> None:
    """A script that starts calling a new command fails here before it fails a tenant."""
    in_lua = {c.lower() for f in LUA.rglob("*.lua")
              for c in re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", f.read_text())}
    granted = {c for c, _ in tenant_commands()}
    assert in_lua and in_lua <= set(script_commands()) <= granted
    assert all(why for _, why in tenant_commands())
    assert not granted & {"keys", "scan", "flushall", "flushdb", "eval", "config", "acl",
                          "debug", "publish", "subscribe", "xrevrange", "lrange"}


def test_the_production_guide_lists_every_command_a_tenant_is_granted() -> None:
    """docs/redis-production.md is what an operator of a shared Redis reads to grant a
    tenant its commands; a command the scripts start using must be there too."""
    guide = (Path(__file__).parents[2] / "docs" / "redis-production.md").read_text()
    listed = {c.lower() for c in re.findall(r"`([A-Z]+(?: [A-Z]+)?)`", guide)}
    missing = [c for c, _ in tenant_commands() if c.replace("|", " ") not in listed]
    assert not missing, f"docs/redis-production.md does not list {missing}"


async def test_a_tenant_runs_its_own_flow_and_is_fenced_from_another(
        admin: tuple[Engine, str]) -> None:
    operator, url = admin
    assert (await check_admin(operator.store.redis)).refusal is None
    mine = await flow_of(operator, A, "mine")
    also_mine = await flow_of(operator, A, "also-mine")  # a worker's batch spans two flows
    theirs = await flow_of(operator, B, "theirs")
    await apply_tenant_user(operator.store.redis, "kflow", A, ["a-secret"])
    await apply_tenant_user(operator.store.redis, "kflow", B, ["b-secret"])
    before = await state_of(operator, theirs)
    a = await tenant(url, A, "a-secret")
    try:
        # The Job pod path (kflow-run): take, start, inputs, progress, log, stored result.
        taken = await a.take(QueueId(A, "work"), 2, owner="pod")
        x = next(t for t in taken if t.node == "x")
        assert await a.release([t for t in taken if t.node != "x"]) == 1  # y: to the worker
        assert await a.node_data(x.flow_id, "x") == {"v": 2}
        job = await Job.for_attempt(a, x, has_children=True)
        job.update_progress(50)
        job.log("halfway")
        await job.close()
        assert await a.store_result(x.flow_id, "x", x.token, 20)
        assert (await a.complete(x.flow_id, "x", x.token)).accepted

        # The worker path (kflow worker): take in batches, renew, read inputs, complete.
        def handler(job: Job) -> int:
            values = job.children_values()
            return sum(values.values()) if values else job.data["v"] * 10

        worker = Worker(a, f"{A}/work", handler,
                        WorkerOptions(concurrency=4, lock_ms=400, renew_ms=100, poll_max_s=0.02))
        running = asyncio.create_task(worker.run())
        for _ in range(400):
            phases = {(await operator.snapshot(f.id)).phase for f in (mine, also_mine)}
            if phases != {"Running"} and "Running" not in phases:
                break
            await asyncio.sleep(0.025)
        worker.stop()
        await asyncio.wait_for(running, 10)
        infos = await operator.node_infos(mine.id)
        assert (await operator.snapshot(mine.id)).phase == "Succeeded"
        assert (await operator.snapshot(also_mine.id)).phase == "Succeeded"
        assert await on_a_node(a.store.redis, "PING")  # the client's health check
        assert infos["sum"].result == 50 and infos["x"].progress == 50
        assert any(e["msg"] == "halfway" for e in await operator.logs(mine.id, node="x"))

        # Namespace B's keys: refused read directly, and through a script with B's keys.
        other = theirs.id
        with pytest.raises(NoPermissionError):
            await a.store.redis.hgetall(a.store.flow(other).meta)
        with pytest.raises(NoPermissionError):
            await a.node_data(other, "x")
        with pytest.raises(NoPermissionError):
            await a.store_result(other, "x", "0" * 16, "forged")
        with pytest.raises(NoPermissionError):
            await a.store.redis.hset(a.store.flow(other).result, "x", "\"forged\"")
        with pytest.raises(NoPermissionError):
            await a.take(QueueId(B, "work"), 10, owner="thief")
        with pytest.raises(NoPermissionError):
            await a.store.redis.zrem(a.store.queue(QueueId(B, "work")).ready, "theirs-uid|x")
        # A script of a tenant's own making is fenced too: it runs with the tenant's rights.
        sneaky = a.store.redis.register_script("return redis.call('HGETALL', KEYS[1])")
        with pytest.raises(NoPermissionError):
            await sneaky(keys=[a.store.flow(other).meta])
        # Nothing server-wide either.
        for command in (("KEYS", "*"), ("FLUSHALL",), ("CONFIG", "GET", "*"),
                        ("ACL", "LIST"), ("EVAL", "return 1", "0")):
            with pytest.raises(NoPermissionError):
                await on_a_node(a.store.redis, *command)
    finally:
        await a.store.redis.aclose()
    assert await state_of(operator, theirs) == before


async def test_a_namespace_named_like_the_start_of_another_gets_none_of_its_keys(
        admin: tuple[Engine, str]) -> None:
    operator, url = admin
    longer = await flow_of(operator, "team-ab", "longer")
    await apply_tenant_user(operator.store.redis, "kflow", A, ["a-secret"])
    a = await tenant(url, A, "a-secret")
    try:
        with pytest.raises(NoPermissionError):
            await a.node_data(longer.id, "x")
        with pytest.raises(NoPermissionError):
            await a.take(QueueId("team-ab", "work"), 1, owner="thief")
    finally:
        await a.store.redis.aclose()


async def test_rotation_keeps_the_previous_password_until_the_next_one(
        admin: tuple[Engine, str]) -> None:
    operator, url = admin
    ref = await flow_of(operator, A, "rotated")
    redis = operator.store.redis
    await apply_tenant_user(redis, "kflow", A, ["first"])
    await apply_tenant_user(redis, "kflow", A, ["second", "first"], replace_passwords=True)
    for password in ("first", "second"):  # running pods keep working after one rotation
        a = await tenant(url, A, password)
        assert await a.node_data(FlowId(A, ref.uid), "x") == {"v": 2}
        await a.store.redis.aclose()
    await apply_tenant_user(redis, "kflow", A, ["third", "second"], replace_passwords=True)
    with pytest.raises((AuthenticationError, ResponseError)):
        await tenant(url, A, "first")
    a = await tenant(url, A, "second")
    await a.store.redis.aclose()


async def test_applying_the_rules_again_keeps_the_passwords(
        admin: tuple[Engine, str]) -> None:
    """What every operator start does: rules re-applied, passwords left as they are."""
    operator, url = admin
    redis = operator.store.redis
    await apply_tenant_user(redis, "kflow", A, ["second", "first"], replace_passwords=True)
    await apply_tenant_user(redis, "kflow", A, ["second"])
    for password in ("first", "second"):
        a = await tenant(url, A, password)
        await a.store.redis.aclose()


async def test_a_tenant_is_not_an_acl_administrator(admin: tuple[Engine, str]) -> None:
    operator, url = admin
    await apply_tenant_user(operator.store.redis, "kflow", A, ["a-secret"])
    a = await tenant(url, A, "a-secret")
    try:
        check = await check_admin(a.store.redis)
        assert check.refusal is not None
    finally:
        await a.store.redis.aclose()


async def test_a_tenants_worker_runs_maps_conditions_added_children_and_a_wide_fan_in(
        admin: tuple[Engine, str]) -> None:
    """Everything a worker pod's engine does for graphs that decide at run time (expanding
    a forEach, judging a condition, adding children, reading a wide parent's inputs a page
    at a time, ending a flow that has exit handlers) needs only the rights a tenant has."""
    operator, url = admin
    ref = FlowRef(uid="dyn-uid", namespace=A, name="dyn")
    leaves = [{"name": f"leaf-{i:05d}", "queue": "work", "data": {"v": i}} for i in range(3000)]
    await operator.submit(ref, compile_flow(Flow.model_validate({
        "metadata": {"name": "dyn", "namespace": A}, "spec": {
            "nodes": [
                {"name": "top", "queue": "work", "children": ["fan", "gate", "wide"]},
                {"name": "fan", "queue": "work", "forEach": {"from": "src", "path": "xs"}},
                {"name": "src", "queue": "work", "data": {"v": 0}},
                {"name": "gate", "queue": "work", "when": 'values["src"].xs.size() > 2',
                 "children": ["src"]},
                {"name": "wide", "queue": "work", "children": [n["name"] for n in leaves]},
                *leaves],
            "onExit": [{"name": "bye", "queue": "work"}]}})))
    await apply_tenant_user(operator.store.redis, "kflow", A, ["a-secret"])
    a = await tenant(url, A, "a-secret")

    def handler(job: Job) -> Any:
        if job.name == "src":
            return {"xs": [1, 2, 3]}
        if job.name == "gate":
            return job.add_children([{"name": "extra", "queue": "work", "data": {"v": 7}}])
        if job.name in ("top", "wide") or job.name.startswith("fan["):
            return len(job.children_values()) if job.name != "top" else sorted(
                job.children_values())
        return (job.data or {}).get("v")

    try:
        worker = Worker(a, f"{A}/work", handler,
                        WorkerOptions(concurrency=20, lock_ms=2000, poll_max_s=0.02))
        running = asyncio.create_task(worker.run())
        for _ in range(1200):
            if (await operator.snapshot(ref.id)).phase != "Running":
                break
            await asyncio.sleep(0.025)
        worker.stop()
        await asyncio.wait_for(running, 10)
        assert not running.exception()
    finally:
        await a.store.redis.aclose()
    snapshot = await operator.snapshot(ref.id)
    assert snapshot.phase == "Succeeded", snapshot
    infos = await operator.node_infos(ref.id)
    assert infos["wide"].result == 3000 and infos["top"].result == ["fan", "gate", "wide"]
    assert infos["extra"].state == "completed" and infos["gate"].state == "completed"
    # The worker pod left the exit handlers to the operator, whose engine starts them.
    assert await operator.start_exit(ref.id)
