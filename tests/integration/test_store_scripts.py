"""The store's scripts: documented headers, one hash slot per call, expiry, deletion, repair."""

from __future__ import annotations

import asyncio
import re
from importlib import resources
from typing import Any

from redis.crc import key_slot

from kflow.api import FlowId
from kflow.api.models import Flow
from kflow.engine import Engine
from kflow.graph import compile_flow
from kflow.store import Completion, Lease, Queued
from kflow.store.keys import (
    FLOW_KEY_NAMES,
    QUEUE_KEY_NAMES,
    active_member,
    queue_member,
    split_active,
    split_member,
)
from kflow.store.scripts import GROUPS, script_sources
from tests.integration.engine_kit import build, delayed_member, new_ref, node, qid, take_map


def _lua_files(group: str) -> dict[str, str]:
    folder = resources.files(f"kflow.store.lua.{group}")
    return {e.name: e.read_text("utf-8") for e in folder.iterdir() if e.name.endswith(".lua")}


def _group_keys(group: str) -> list[str]:
    """The key list a group's `_keys.lua` states: names in KEYS order, from its locals."""
    source = _lua_files(group)["_keys.lua"]
    header, body = source.split("]]", 1)
    by_index: dict[int, str] = {}
    for lhs, rhs in re.findall(r"local ([A-Z_, ]+) = ([^\n]+?)(?: -- @per-call)?\n", body):
        for name, key in zip(lhs.split(","), rhs.split(","), strict=True):
            index = re.fullmatch(r"\s*KEYS\[(\d+)\]\s*", key)
            assert index, f"{group}/_keys.lua: {name.strip()} is not one of KEYS"
            by_index[int(index.group(1))] = name.strip().removeprefix("K_").lower()
    listed = re.findall(r"KEYS\[(\d+)\] (\w+)", header)
    assert [(int(i), n) for i, n in listed] == sorted(by_index.items()), \
        f"{group}/_keys.lua: its header and its locals disagree"
    return [by_index[i] for i in sorted(by_index)]


def test_each_group_states_its_key_list_once_as_the_store_passes_it() -> None:
    assert _group_keys("flow") == list(FLOW_KEY_NAMES)
    assert _group_keys("queue") == list(QUEUE_KEY_NAMES)
    assert {g: len(k) for g, k in GROUPS.items()} == {"flow": 21, "queue": 7}
    # Every script takes its group's keys, or the first of them (`-- @keys-through`).
    taken = {n: nkeys for n, (nkeys, _) in script_sources().items()
             if nkeys != len(GROUPS[n.split("/")[0]])}
    assert taken == {"flow/add": FLOW_KEY_NAMES.index("events") + 1,
                     "flow/start": FLOW_KEY_NAMES.index("times") + 1}


# Calls of flow/_lib that change node states (and so the per-state counts, which set_state
# keeps in memory until flush_counts writes them).
_STATE_CHANGES = re.compile(r"\b(set_state|cancel_node|schedule|unlock|child_settled|"
                            r"settle_parents|settle_failure|complete_checked|complete_map|"
                            r"begin_map|begin_decide)\(")
_FLUSHES = ("step_reply(", "settle_attempts(", "apply_expiry()", "flush_counts()")


def test_every_flow_script_that_changes_states_writes_the_counts() -> None:
    """A script that changed a state but returned without flushing would lose count changes
    (and a flow whose counts are off never succeeds)."""
    files = _lua_files("flow")
    for name, source in files.items():
        if name.startswith("_"):
            continue
        own = [source] + [files[f"{inc}.lua"] for inc in
                          re.findall(r"^-- @include flow/(\S+)$", source, re.MULTILINE)
                          if inc not in ("_lib", "_keys", "_reply", "_attempt-batch")]
        body = "\n".join(s.split("]]", 1)[1] for s in own)
        if _STATE_CHANGES.search(body):
            assert any(f in source for f in _FLUSHES), f"flow/{name}: changes states " \
                "but never flushes the counts (return through step_reply or apply_expiry)"


# What a script defers to the end of its call (flow/_lib: a batch's events, the times it
# read first) is written only by step_reply or apply_expiry (settle_attempts calls both).
_DEFERS = re.compile(r"^EVENT_BATCH = true$|\bload_times\(|\bread_batch\(", re.MULTILINE)


def test_every_flow_script_that_defers_writes_returns_through_the_reply_that_writes_them(
        ) -> None:
    """A batching script that returned any other way would drop its events and times."""
    files = _lua_files("flow")
    deferring = {name for name, source in files.items()
                 if not name.startswith("_") and _DEFERS.search(source)}
    assert deferring == {"start.lua", "complete.lua"}, deferring
    for name in deferring:
        body = files[name].split("]]", 1)[1]
        assert re.search(r"^return (step_reply|settle_attempts)\(", body, re.MULTILINE), name
        # Any other reply would be encoded here, past the step that writes what was deferred.
        assert not re.search(r"\breturn (cjson\.encode|redis\.error_reply)\(", body), name


def test_every_script_opens_with_a_header_naming_keys_argv_returns_events() -> None:
    files = {f"{group}/{name}": src for group in GROUPS
             for name, src in _lua_files(group).items() if not name.startswith("_")}
    assert len(files) >= 20
    assert not [n for n in resources.files("kflow.store.lua").iterdir()
                if n.name.endswith(".lua") and not n.name.startswith("_")], \
        "a script outside a group has no key list"
    for name, source in files.items():
        group = name.split("/")[0]
        keys = _group_keys(group)
        assert re.fullmatch(r"[a-z-]+/[a-z-]+\.lua", name), f"{name}: a verb, no key count"
        header, body = source.split("]]", 1)
        assert source.startswith("--[["), name
        for word in ("ARGV", "Returns", "Events"):
            assert word in header, f"{name}: header does not document {word}"
        # The keys come from the group's list: the header names the group and the keys the
        # script itself touches, each one of the group's.
        match = re.search(rf"Keys: the {group} group \({group}/_keys\.lua\); uses ([^.]+)\.",
                          header.replace("\n  ", " "))
        assert match, f"{name}: header does not name its group's key list"
        listed = {w for w in re.findall(r"[a-z]+", match.group(1)) if w in keys}
        used = {k.lower() for k in re.findall(r"\bK_([A-Z]+)\b", body)}
        assert used <= listed or "every key" in match.group(1), \
            f"{name}: uses keys its header does not list: {sorted(used - listed)}"
        if used:
            # (after its function flags and the keys it takes, if it names them)
            assert re.sub(r"^(-- @(flags|keys-through) .*\n)+", "", body.lstrip()).startswith(
                f"-- @include {group}/_keys"), \
                f"{name}: takes its names for KEYS from {group}/_keys first"
        # Keys only ever come from KEYS: a script never builds a key name itself.
        assert "prefix" not in body


def test_includes_are_resolved() -> None:
    for verb, (_, source) in script_sources().items():
        assert "@include" not in source, verb


async def test_every_script_call_of_a_full_run_touches_one_slot(engine: Engine) -> None:
    calls: list[tuple[str, list[str]]] = []
    run = engine.store.scripts.run

    async def recording_run(verb: str, keys: Any, args: list[Any]) -> Any:
        calls.append((verb, list(keys)))
        return await run(verb, keys, args)

    engine.store.scripts.run = recording_run  # type: ignore[method-assign]
    run_many = engine.store.scripts.run_many

    async def recording_run_many(batch: list[tuple[str, Any, list[Any]]]) -> list[Any]:
        calls.extend((verb, list(keys)) for verb, keys, _ in batch)
        return await run_many(batch)

    engine.store.scripts.run_many = recording_run_many  # type: ignore[method-assign]
    engine.chunk_nodes = 3
    ref, other = new_ref(), new_ref()
    flow = build(node("top", "a", "b", queue="q1"), node("a", queue="q2", attempts=2),
                 node("b", "c", "d", queue="q3"), node("c", queue="q2", on_failure="ignore"),
                 node("d", queue="q1"))
    await engine.submit(ref, flow, ttl_seconds_after_finished=600)
    await engine.submit(other, build(node("solo", queue="q9")))
    got = await take_map(engine, "q2")
    await engine.update_progress(ref.id, "a", got["a"].token, 50)
    await engine.log(ref.id, "a", got["a"].token, "hi")
    await engine.fail(ref.id, "a", got["a"].token, "once")  # retry
    await engine.keep_pod_log(ref.id, "a", 1, "its log", failed=True, flow_budget=1000)
    await engine.fail(ref.id, "c", got["c"].token, "ignored")
    await engine.suspend(ref.id)
    await engine.resume(ref.id)
    a = (await take_map(engine, "q2"))["a"]
    await engine.renew([a], 10_000)
    await engine.store_result(ref.id, "a", a.token, 1)
    await engine.complete(ref.id, "a", a.token)
    d = (await engine.take(qid("q1"), 5, owner="t", lease_ms=1))[0]
    await asyncio.sleep(0.02)
    await engine.release_stalled(qid("q1"))
    d = (await take_map(engine, "q1"))["d"]
    await engine.complete(ref.id, "d", d.token, 4)
    await engine.complete(ref.id, "b", (await take_map(engine, "q3"))["b"].token, 2)
    await engine.fail(ref.id, "top", (await take_map(engine, "q1"))["top"].token, "end")
    await engine.retry_failed(ref.id)
    await engine.inputs_many(ref.id, ["top", "b"])
    await engine.graph_nodes(ref.id)
    await engine.promote_due(qid("q1"))
    await engine.cancel(ref.id)
    await engine.delete(ref.id)
    solo = (await take_map(engine, "q9"))["solo"]
    await engine.release([solo])
    solo = (await take_map(engine, "q9"))["solo"]
    await engine.complete_many(other.id, [("solo", solo.token, 9)])
    await engine.delete(other.id)
    await engine.forget_queue(qid("q9"))
    # Map nodes: a count expands at once; a from node whose value holds no list fails its map.
    maps = new_ref()
    await engine.submit(maps, compile_flow(Flow.model_validate({
        "metadata": {"name": "maps", "namespace": maps.namespace}, "spec": {"nodes": [
            {"name": "sq", "queue": "q5", "forEach": {"count": 2}},
            {"name": "fan", "queue": "q5", "forEach": {"from": "src"}},
            {"name": "src", "queue": "q5"}]}})))
    src = (await take_map(engine, "q5"))["src"]
    await engine.complete(maps.id, "src", src.token, {"no": "list"})
    await engine.delete(maps.id)
    # A condition judged, and children a running node adds.
    dyn = new_ref()
    await engine.submit(dyn, compile_flow(Flow.model_validate({
        "metadata": {"name": "dyn", "namespace": dyn.namespace}, "spec": {"nodes": [
            {"name": "gate", "queue": "q6", "when": "false"},
            {"name": "adder", "queue": "q6"}]}})))
    adder = (await take_map(engine, "q6"))["adder"]
    await engine.add_children(dyn.id, "adder", adder.token, [{"name": "x", "queue": "q6"}])
    await engine.delete(dyn.id)

    verbs = {verb for verb, _ in calls}
    assert verbs == set(script_sources()), f"not exercised: {set(script_sources()) - verbs}"
    for verb, keys in calls:
        slots = {key_slot(k.encode()) for k in keys}
        assert len(slots) == 1, f"{verb} touches slots {slots}"
        server_slots = {await engine.store.redis.execute_command("CLUSTER KEYSLOT", k)
                        for k in keys} if _is_cluster(engine) else slots
        assert server_slots == slots
    # The flows and queues really are spread over different slots.
    all_slots = {key_slot(keys[0].encode()) for _, keys in calls}
    assert len(all_slots) >= 4


def _is_cluster(engine: Engine) -> bool:
    return type(engine.store.redis).__name__ == "RedisCluster"


async def _flow_keys_present(engine: Engine, uid: FlowId) -> list[str]:
    present = []
    for key in engine.store.flow(uid).all:
        if await engine.store.redis.exists(key):
            present.append(key)
    return present


async def test_finished_flow_expires_after_its_ttl_even_keys_written_late(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("root", "x", "slow"), node("x"), node("slow")),
                        ttl_seconds_after_finished=100)
    held = await take_map(engine)
    await engine.fail(ref.id, "x", held["x"].token, "boom")  # flow Failed; slow still runs
    assert (await engine.snapshot(ref.id)).phase == "Failed"
    result_key = engine.store.flow(ref.id).result
    assert not await engine.store.redis.exists(result_key)
    await engine.complete(ref.id, "slow", held["slow"].token, "late")  # creates :result
    keys = await _flow_keys_present(engine, ref.id)
    assert result_key in keys and len(keys) >= 10
    for key in keys:
        pttl = await engine.store.redis.pttl(key)
        assert 0 < pttl <= 100_000, f"{key}: PTTL {pttl}"
    meta = await engine.store.meta(ref.id)
    assert meta is not None and meta.finished_at_ms is not None
    assert meta.expire_at_ms == meta.finished_at_ms + 100_000


async def test_flow_without_ttl_keeps_its_keys(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("x")))
    x = (await take_map(engine))["x"]
    assert (await engine.complete(ref.id, "x", x.token, 1)).phase == "Succeeded"
    for key in await _flow_keys_present(engine, ref.id):
        assert await engine.store.redis.pttl(key) == -1


async def test_delete_removes_every_key_of_the_flow(engine: Engine) -> None:
    ref, keep = new_ref(), new_ref()
    await engine.submit(ref, build(node("top", "x", "y"), node("x", data={"a": 1}), node("y")))
    await engine.submit(keep, build(node("x", queue="other")))
    held = await take_map(engine)
    await engine.log(ref.id, "x", held["x"].token, "line")
    await engine.fail(ref.id, "y", held["y"].token, "boom")
    await engine.delete(ref.id)
    leftovers = [k async for k in engine.store.redis.scan_iter(match=f"kflow:{{{ref.id}}}*")]
    assert leftovers == []
    assert await _flow_keys_present(engine, ref.id) == []
    assert await _flow_keys_present(engine, keep.id) != []
    # The running attempt's lease is freed; leftover entries are dropped, never started.
    assert (await engine.queue_depth(qid()))[1] == 0
    assert await engine.take(qid(), 10, owner="t") == []
    assert await engine.queue_depth(qid()) == (0, 0, 0)


async def test_reconcile_repairs_a_crash_between_complete_and_enqueue(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("top", "x", queue="up"), node("x")))
    x = (await take_map(engine))["x"]
    [reply] = await engine.store.complete([(ref.id, [Completion("x", x.token, 1)])])  # crash
    assert not isinstance(reply, BaseException)  # the flow step ran, its queue step did not
    assert reply.rows[0].accepted and [q.node for q in reply.queued] == ["top"]
    assert await engine.queue_depth(qid("up")) == (0, 0, 0)
    assert await engine.reconcile_flow(ref.id) == 1
    assert await engine.reconcile_flow(ref.id) == 0  # idempotent
    assert list(await take_map(engine, "up")) == ["top"]
    # The lease the crash left behind is dropped once it expires, nothing else happens.
    assert await engine.release_stalled(qid()) == []


async def test_lost_hold_between_take_and_start_is_released_and_requeued(
        engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("x")))
    taken, _, _ = await engine.store.take(qid(), 1, 1, ["tok1"])  # queue step only: crash
    assert taken == [Lease(ref.id, "x", "tok1")]
    assert (await engine.node_infos(ref.id))["x"].state == "ready"
    assert await engine.queue_depth(qid()) == (0, 1, 0)
    await asyncio.sleep(0.02)
    assert await engine.release_stalled(qid()) == []  # not an attempt: nothing stalled
    assert await engine.queue_depth(qid()) == (1, 0, 0)
    (x,) = (await take_map(engine)).values()
    assert x.attempt == 1


async def test_reconcile_queues_the_leaves_of_a_flow_activated_before_a_crash(
        engine: Engine) -> None:
    ref = new_ref()
    flow = build(node("top", "a", "b"), node("a"), node("b", delay_ms=60_000))
    (chunk,) = engine._chunks(flow)
    await engine.store.create_flow(ref.id, ref.name, total=3, roots=1, ttl_seconds=None,
                                   chunks=1, queues=["work"])
    await engine.store.add_nodes(ref.id, 1, chunk)
    assert await engine.store.activate(ref.id) == "Running"
    assert await engine.queue_depth(qid()) == (0, 0, 0)
    assert await engine.reconcile_flow(ref.id) == 2
    assert await engine.queue_depth(qid()) == (1, 0, 1)
    due = await engine.store.redis.zscore(engine.store.queue(qid()).delayed,
                                          delayed_member(ref.uid, "b"))
    meta = await engine.store.meta(ref.id)
    assert meta is not None and meta.started_at_ms is not None
    assert meta.started_at_ms <= due <= meta.started_at_ms + 60_000


async def test_start_refuses_a_delayed_node_before_its_due_time(engine: Engine) -> None:
    ref = new_ref()
    await engine.submit(ref, build(node("b", delay_ms=60_000)))
    # Simulate a duplicate ready entry (e.g. a reconcile racing a promote).
    await engine.store.enqueue(qid(), [(ref.id, Queued("b", "q", 0, 0))])
    assert await engine.take(qid(), 5, owner="t") == []
    assert await engine.queue_depth(qid()) == (0, 0, 1)
    assert (await engine.node_infos(ref.id))["b"].state == "delayed"


def test_active_member_round_trips_names_with_separators() -> None:
    member = active_member("uid-1", "odd|name", "tok")
    assert split_active(member) == ("uid-1", "odd|name", "tok")
    assert split_member(queue_member("uid-1", "odd|name")) == ("uid-1", "odd|name")
