"""Map nodes (forEach, issue 14) at 100,000 items, side by side with a static 100,000-leaf flow.

On one private redis-server, flushed between workloads (data and scripts), each repeat runs
three workloads in a rotated order (interleaved, so the machine's noise hits all alike):
- static: one parent with 100,000 leaves, a compiled flow, added with `Engine.submit`;
- count: `{name: fan, queue: work, forEach: {count: 100000}}`, added with `Engine.submit`
  (which expands the items through `Engine.expand` in chunks);
- from: a map over a node's value: the `list` node, taken and completed through the engine
  with `{"files": [100,000 strings]}`, and the expansion that follows;
then the static flow's and the from map's items are run to their end (take, complete_batch)
and the parent's inputs are read as a parent's are (`Engine.inputs_many`). Every timed step
runs under a separate PINGing client (kflow.devkit.pinger) and with Redis's slowlog logging
every command over 1 ms, so the worst stall and the slowest single command are both recorded.
Medians of the repeats; the section "Map nodes (forEach)" of bench/RESULTS.md.
Run: `.venv/bin/python bench/bench_map.py [--repeat N] [--items N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aredis

from kflow.api import FlowId, QueueId, parse_manifest
from kflow.api.models import Flow
from kflow.devkit.checkout import REPO
from kflow.devkit.pinger import pinging
from kflow.devkit.redis import redis_server
from kflow.devkit.results import record, table
from kflow.engine import Engine, FlowRef, QueueConfig, tune_collector
from kflow.graph import compile_flow
from kflow.store.scripts import libraries, script_sources

NS, QUEUE = "bench", "work"
BATCH = 500  # nodes taken and completed per call while running a flow's items
STALL_BAR_MS = 20.0  # the bar: no Redis stall above this
# Only commands slower than this go to the slowlog: logging every command (a script's inner
# calls included) would slow the scripts that make many calls, the expansion's among them.
SLOWLOG_FLOOR_US = 1000
ANNOTATION_LIMIT = 256 * 1024  # API server: all annotations of an object (last-applied is one)
ETCD_LIMIT = 1536 * 1024  # etcd's default request size limit (1.5 MiB)

# The slowlog names a script by its function (or by its SHA, under EVALSHA): map them back
# to "<group>/<verb>".
SCRIPT_BY_SHA = {hashlib.sha1(src.encode()).hexdigest(): name
                 for name, (_, src) in script_sources().items()}
SCRIPT_BY_SHA.update({function: name for lib in libraries().values()
                      for name, function in lib.functions.items()})


def manifest(name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"name": name, "namespace": NS}, "spec": {"nodes": nodes}}


def flow_of(raw: dict[str, Any]) -> Flow:
    parsed = parse_manifest(raw)
    assert isinstance(parsed, Flow)
    return parsed


def count_map(items: int) -> dict[str, Any]:
    return manifest("fan", [{"name": "fan", "queue": QUEUE, "forEach": {"count": items}}])


def static_fan_out(items: int) -> dict[str, Any]:
    """The same graph written out: a parent and `items` leaves, each leaf with the data an
    item of the count map gets ({item, index}), so both add the same bytes per node."""
    leaves = [{"name": f"fan-{i}", "queue": QUEUE, "data": {"item": i, "index": i}}
              for i in range(items)]
    parent = {"name": "aggregate", "queue": QUEUE, "children": [f"fan-{i}" for i in range(items)]}
    return manifest("fan-static", [*leaves, parent])


def from_map() -> dict[str, Any]:
    return manifest("files", [
        {"name": "merge", "queue": QUEUE, "children": ["process"]},
        {"name": "process", "queue": QUEUE, "forEach": {"from": "list", "path": "files"}},
        {"name": "list", "queue": QUEUE}])


def spec_bytes(raw: dict[str, Any]) -> int:
    """Bytes of the Flow as compact JSON: what kubectl apply stores in its last-applied
    annotation and sends to the API server."""
    return len(json.dumps(raw, separators=(",", ":")).encode())


class TimedEngine(Engine):
    """The engine, timing its map expansions (the work that follows a from node's completion)."""

    expand_s: float = 0.0

    async def expand(self, flow_id: FlowId, node: str) -> int:
        t0 = time.perf_counter()
        try:
            return await super().expand(flow_id, node)
        finally:
            self.expand_s += time.perf_counter() - t0


@dataclass
class Step:
    """One timed step: wall time, worst PING of the second client, slowest Redis command."""

    wall_s: float
    ping_ms: float
    slowest_ms: float
    slowest_what: str
    chunk_ms: float = 0.0  # the chunk script's calls (client round trip): median
    chunk_max_ms: float = 0.0  # and slowest
    chunks: int = 0
    chunk_max_at: int = -1  # which call (0-based) was the slowest
    server_chunk_ms: float = 0.0  # the chunk script's calls as Redis ran them (slowlog): median
    busy_s: float = 0.0  # time Redis spent running commands during the step (commandstats)


@dataclass
class Run:
    steps: dict[str, Step] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)


def command_name(args: Any) -> str:
    words = (args.decode(errors="replace") if isinstance(args, bytes) else str(args)).split()
    if not words:
        return "?"
    if words[0].upper() in ("EVALSHA", "FCALL") and len(words) > 1:
        return SCRIPT_BY_SHA.get(words[1], "a script")
    return words[0].upper()


class Meter:
    """Times a step under the PINGing client, with the slowlog logging every command over 1 ms,
    and each call of the step's chunk script (client round trip, `Scripts.observe`)."""

    def __init__(self, client: aredis.Redis, port: int, engine: Engine) -> None:
        self.client, self.port = client, port
        self.chunk: str | None = None
        self.calls: list[float] = []
        self.busy_before = 0
        engine.store.scripts.observe(self._ran)

    def _ran(self, name: str, seconds: float) -> None:
        if name == self.chunk:
            self.calls.append(seconds * 1000)

    async def busy_us(self) -> int:
        stats = await self.client.info("commandstats")
        return sum(int(v["usec"]) for v in stats.values())

    async def start(self, chunk: str | None) -> None:
        self.chunk, self.calls = chunk, []
        self.busy_before = await self.busy_us()
        await self.client.config_set("slowlog-max-len", 1_000_000)
        await self.client.config_set("slowlog-log-slower-than", SLOWLOG_FLOOR_US)
        await self.client.slowlog_reset()

    async def finish(self, wall_s: float, ping: dict[str, Any]) -> Step:
        busy = (await self.busy_us() - self.busy_before) / 1e6
        entries = [e for e in await self.client.slowlog_get(-1)
                   if command_name(e["command"]) not in ("SLOWLOG", "CONFIG")]  # the meter's own
        server = [e["duration"] / 1000 for e in entries if command_name(e["command"]) == self.chunk]
        await self.client.config_set("slowlog-log-slower-than", 10_000)
        await self.client.slowlog_reset()
        worst = max(entries, key=lambda e: e["duration"], default=None)
        calls, self.chunk = self.calls, None
        return Step(wall_s, float(ping["max_ms"]),
                    0.0 if worst is None else worst["duration"] / 1000,
                    "-" if worst is None else command_name(worst["command"]),
                    statistics.median(calls) if calls else 0.0, max(calls, default=0.0),
                    len(calls), max(range(len(calls)), key=calls.__getitem__, default=-1),
                    statistics.median(server) if server else 0.0, busy)


async def fresh(client: aredis.Redis) -> None:
    """An empty server for the next workload: its data, and its scripts, so the Lua heap starts
    empty too (a big read leaves megabytes of garbage there, and the script call that
    collects it later is slow: it would be charged to the wrong workload)."""
    await client.flushall()
    await client.script_flush()


async def lua_mb(client: aredis.Redis) -> float:
    return int((await client.info("memory"))["used_memory_lua"]) / 2**20


async def drain(engine: Engine, until: str, value: Any) -> int:
    """Run every ready node of the queue (value(node) as its result) until node `until`
    is taken; returns how many ran. `until` itself is taken and left running."""
    ran = 0
    queue = QueueId(NS, QUEUE)
    while True:
        attempts = await engine.take(queue, BATCH, owner="bench")
        if not attempts:
            raise RuntimeError(f"queue {queue} ran dry before {until} was ready ({ran} ran)")
        rest = [a for a in attempts if a.node != until]
        if rest:
            await engine.complete_batch([(a.flow_id, a.node, a.token, value(a.node))
                                         for a in rest])
            ran += len(rest)
        if len(rest) < len(attempts):
            return ran


async def timed(meter: Meter, work: Any, chunk: str | None = None) -> tuple[Step, Any]:
    """Run `work` (an awaitable) as a measured step; `chunk`: the script whose calls to time."""
    await meter.start(chunk)
    with pinging(meter.port) as ping:
        t0 = time.perf_counter()
        out = await work
        wall = time.perf_counter() - t0
    return await meter.finish(wall, ping), out


def item_value(node: str) -> Any:
    return {"node": node, "rows": len(node)}


async def run_static(url: str, port: int, items: int, out: Run) -> None:
    compiled = compile_flow(flow_of(static_fan_out(items)))
    client = aredis.Redis.from_url(url)
    await fresh(client)
    engine = Engine(client)
    await engine.configure_queue(QueueId(NS, QUEUE), QueueConfig(concurrency=None))
    meter = Meter(client, port, engine)
    ref = FlowRef(uid=uuid.uuid4().hex, namespace=NS, name="fan-static")
    out.steps["static add"], _ = await timed(meter, engine.submit(ref, compiled),
                                          "flow/add-nodes")
    assert (await engine.snapshot(ref.id)).total == items + 1
    assert await drain(engine, "aggregate", item_value) == items
    out.steps["static read"], got = await timed(meter, engine.inputs_many(ref.id, ["aggregate"]))
    assert len(got[0][0]) == items, len(got[0][0])
    out.extra["static read lua_mb"] = await lua_mb(client)
    await client.aclose()


async def run_count(url: str, port: int, items: int, out: Run) -> None:
    compiled = compile_flow(flow_of(count_map(items)))
    client = aredis.Redis.from_url(url)
    await fresh(client)
    engine = TimedEngine(client)
    await engine.configure_queue(QueueId(NS, QUEUE), QueueConfig(concurrency=None))
    meter = Meter(client, port, engine)
    ref = FlowRef(uid=uuid.uuid4().hex, namespace=NS, name="fan")
    out.steps["count add"], _ = await timed(meter, engine.submit(ref, compiled), "flow/expand")
    out.extra["count expand_s"] = engine.expand_s
    snap = await engine.snapshot(ref.id)
    assert snap.total == items + 1 and "expanding" not in snap.counts, snap
    await client.aclose()


async def run_from(url: str, port: int, items: int, out: Run) -> None:
    compiled = compile_flow(flow_of(from_map()))
    files = [f"s3://bucket/input/part-{i:06d}.csv" for i in range(items)]
    client = aredis.Redis.from_url(url)
    await fresh(client)
    engine = TimedEngine(client)
    await engine.configure_queue(QueueId(NS, QUEUE), QueueConfig(concurrency=None))
    meter = Meter(client, port, engine)
    ref = FlowRef(uid=uuid.uuid4().hex, namespace=NS, name="files")
    assert await engine.submit(ref, compiled)
    [lister] = await engine.take(QueueId(NS, QUEUE), 10, owner="bench")
    assert lister.node == "list", lister
    out.steps["from complete+expand"], _ = await timed(
        meter, engine.complete(lister.flow_id, "list", lister.token, {"files": files}),
        "flow/expand")
    out.extra["from expand_s"] = engine.expand_s
    out.extra["from value_bytes"] = len(json.dumps({"files": files}).encode())
    snap = await engine.snapshot(ref.id)
    assert snap.total == items + 3 and "expanding" not in snap.counts, snap
    assert await drain(engine, "merge", item_value) == items
    out.steps["from read"], got = await timed(meter, engine.inputs_many(ref.id, ["merge"]))
    values = got[0][0]["process"]
    out.extra["from read lua_mb"] = await lua_mb(client)
    assert len(values) == items and values[7] == item_value("process[7]"), values[:8]
    await client.aclose()


WORKLOADS = {"static": run_static, "count": run_count, "from": run_from}


def med(runs: list[Run], step: str, what: str) -> float:
    return float(statistics.median(getattr(r.steps[step], what) for r in runs))


def worst_of(runs: list[Run], step: str) -> str:
    """The slowest command's script over the repeats (the one of the worst repeat)."""
    worst = max(runs, key=lambda r: r.steps[step].slowest_ms)
    return worst.steps[step].slowest_what


def slowest(ms: float, what: str) -> str:
    return "under 1 ms" if ms == 0 else f"{ms:.1f} ms ({what})"


def code_version() -> str:
    """The commit the engine under test comes from, and whether its code has local changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "a tree outside git"
    dirty = git("status", "--porcelain", "--", "operator")
    return f"commit {commit}" + (" with uncommitted changes under operator/" if dirty else "")


def report(runs: list[Run], items: int, repeat: int, code: str) -> None:
    n = f"{items:,}"

    def row(label: str, step: str, wall_note: str = "") -> list[object]:
        pings = [r.steps[step].ping_ms for r in runs]
        chunks = (f"{med(runs, step, 'chunks'):.0f} x {med(runs, step, 'chunk_ms'):.1f} ms "
                  f"(max {med(runs, step, 'chunk_max_ms'):.1f}; in Redis "
                  f"{med(runs, step, 'server_chunk_ms'):.1f})"
                  if runs[0].steps[step].chunks else "-")
        return [label, f"{med(runs, step, 'wall_s'):.2f} s{wall_note}",
                f"{med(runs, step, 'busy_s'):.2f} s",
                f"{med(runs, step, 'ping_ms'):.1f} ms ({min(pings):.1f}-{max(pings):.1f})",
                slowest(med(runs, step, 'slowest_ms'), worst_of(runs, step)), chunks]

    count_expand = statistics.median(r.extra["count expand_s"] for r in runs)
    from_expand = statistics.median(r.extra["from expand_s"] for r in runs)
    rows = [
        row(f"add a static flow: 1 parent + {n} leaves (`Engine.submit`)", "static add"),
        row(f"add `forEach: {{count: {items}}}` (`Engine.submit`, expansion in it)", "count add",
            f" (expansion {count_expand:.2f} s)"),
        row(f"complete the `from` node with {n} strings, and the expansion that follows",
            "from complete+expand", f" (expansion {from_expand:.2f} s)"),
        row(f"parent reads a static flow's {n} values (`Engine.inputs_many`)", "static read"),
        row(f"parent reads the map's {n} values (`Engine.inputs_many`)", "from read"),
    ]
    count_b = spec_bytes(count_map(items))
    static_b = spec_bytes(static_fan_out(items))

    def fits(size: int) -> str:
        return (f"{'under' if size <= ANNOTATION_LIMIT else 'over'} 256 KiB, "
                f"{'under' if size <= ETCD_LIMIT else 'over'} 1.5 MiB")

    steps = (("add static", "static add"), ("add count map", "count add"),
             ("complete from + expand", "from complete+expand"),
             ("read static values", "static read"), ("read map values", "from read"))
    def where(s: Step) -> str:
        return (f", slowest chunk call: number {s.chunk_max_at + 1} of {s.chunks} "
                f"({s.chunk_max_ms:.1f} ms)" if s.chunks else "")

    spiky = any(max(r.steps[step].ping_ms, r.steps[step].slowest_ms) > STALL_BAR_MS
                and r.steps[step].chunks for _, step in steps for r in runs)
    over = [f"{label}, repeat {i + 1}: worst PING {r.steps[step].ping_ms:.1f} ms, slowest "
            f"command {slowest(r.steps[step].slowest_ms, r.steps[step].slowest_what)}"
            f"{where(r.steps[step])}"
            for label, step in steps for i, r in enumerate(runs)
            if max(r.steps[step].ping_ms, r.steps[step].slowest_ms) > STALL_BAR_MS]
    value_kb = statistics.median(r.extra["from value_bytes"] for r in runs) / 1024
    body = (
        f"Engine of {code}. Median of {repeat} interleaved repeats (workload order rotated "
        "each repeat), one private redis-server flushed between workloads (data and "
        "scripts, so each starts with an empty Lua heap); the engine in "
        "this process, a separate process PINGing every 1 ms. Worst PING: median of the "
        "repeats' worst round trips (range in brackets); on 2 shared cores it also counts "
        "time the pinger waited for a CPU, so it is an upper bound. Slowest Redis command: "
        "the longest single call in the slowlog (commands over 1 ms logged), i.e. the longest "
        "Redis itself kept any other client waiting, with the script of the worst repeat. "
        "Chunk calls: the calls of the "
        "step's chunk script (`flow/add-nodes` for the static flow, `flow/expand` for the "
        "maps; 500 nodes each), timed by the client (round trip), median and slowest of the "
        "repeat, medians over the repeats; in Redis: the median of those calls in the slowlog "
        "(the time Redis ran each). Redis busy: the time Redis spent running commands during "
        "the step (INFO commandstats). Issue 14's bar: no stall above 20 ms.\n\n"
        + table(["step", "wall time", "Redis busy", "worst PING (range)",
                 "slowest Redis command", "chunk calls x median (max; in Redis)"], rows)
        + "\n\nA static parent's values come back from one `flow/inputs` script call (all its "
        "children read inside it); a map child's values are read a page (1,000) at a time "
        "with HMGET; Redis's Lua heap after the read: "
        f"{statistics.median(r.extra['static read lua_mb'] for r in runs):.1f} MiB (static) and "
        f"{statistics.median(r.extra['from read lua_mb'] for r in runs):.1f} MiB (map), mostly "
        "garbage a later script call collects. "
        + f"The `from` node's value is {value_kb:,.0f} KiB of JSON, stored by one complete "
        "call. Items run between the steps (not timed): take and `complete_batch` in "
        f"batches of {BATCH}, each value a small object.\n\n"
        + table(["Flow spec, compact JSON (what `kubectl apply` sends and keeps in its "
                 "last-applied annotation)", "bytes", "limits"],
                [[f"`forEach: {{count: {items}}}`", f"{count_b:,}", fits(count_b)],
                 [f"written out: 1 parent + {n} leaves", f"{static_b:,}", fits(static_b)]])
        + "\n\nThe API server refuses an object whose annotations pass 256 KiB (client-side "
        "`kubectl apply` keeps the whole object in one), and etcd a request over 1.5 MiB; "
        "kubectl was not run here.\n\n"
        + ("Above 20 ms (worst PING or slowest command): " + "; ".join(over) + "."
           + (" On 2 shared cores the OS can deschedule Redis in the middle of a call, and the "
              "slowlog counts that time too: a spike at one chunk of one repeat, on the static "
              "flow as well, is the machine; a chunk script slow every time would show in the "
              "medians." if spiky else "")
           if over
           else "No worst PING and no Redis command above 20 ms in any repeat.")
        + "\n\nEvery repeat (JSON):\n\n```\n"
        + "\n".join(json.dumps({"steps": {k: vars(v) for k, v in r.steps.items()},
                                **r.extra}) for r in runs)
        + "\n```\n"
    )
    record("Map nodes (forEach)", body)


async def main(repeat: int, items: int, code: str) -> None:
    runs: list[Run] = []
    order = list(WORKLOADS)
    with redis_server() as srv:
        for i in range(repeat):
            run = Run()
            for name in order[i % len(order):] + order[:i % len(order)]:
                await WORKLOADS[name](srv.url, srv.port, items, run)
            runs.append(run)
            print(f"repeat {i + 1}: " + json.dumps(
                {k: [round(v.wall_s, 3), round(v.ping_ms, 1), round(v.slowest_ms, 1),
                     v.slowest_what] for k, v in run.steps.items()}), file=sys.stderr)
    report(runs, items, repeat, code)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repeats (median kept)")
    parser.add_argument("--items", type=int, default=100_000, help="items of each map")
    parser.add_argument("--code", help="what the engine under test is, for the record "
                        "(default: the checkout's commit, read with git)")
    args = parser.parse_args()
    tune_collector()  # as `kflow run --local`, `kflow worker` and the operator do at start
    asyncio.run(main(args.repeat, args.items, args.code or code_version()))
