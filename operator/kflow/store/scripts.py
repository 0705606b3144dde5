"""Load the Lua scripts from `lua/<group>/`, resolve their includes, register them with a client.

Each script runs as a Redis Function (FCALL) where the server allows it: a group's scripts
are one function library (`libraries`), loaded once per server, whose includes run once when
it loads instead of on every call. A server without functions (before Redis 7) or a user
without the right to call them (FCALL, FUNCTION LOAD) gets the same scripts by EVALSHA.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoPermissionError, OutOfMemoryError, ResponseError

from kflow.store.keys import FLOW_KEY_NAMES, QUEUE_KEY_NAMES

log = logging.getLogger(__name__)

_INCLUDE = re.compile(r"^-- @include (\S+)\s*$", re.MULTILINE)
_SCRIPT_NAME = re.compile(r"^([a-z-]+)\.lua$")
# A script that takes only the first keys of its group, through the one named, e.g.
# "-- @keys-through events" (lua/flow/_keys.lua: the hot scripts' keys come first).
_KEYS_THROUGH = re.compile(r"^-- @keys-through (\w+)\s*$", re.MULTILINE)
# A script's function flags (Redis Functions), e.g. "-- @flags no-writes".
_FLAGS = re.compile(r"^-- @flags ([a-z -]+?)\s*$", re.MULTILINE)
# An include's state that belongs to one call: in a library it is declared once and set
# again at the start of every call ("local A, B = x, y -- @per-call"; no value: nil).
_PER_CALL = re.compile(r"^local ([A-Za-z_][\w, ]*?)(?: = (.+?))?\s*-- @per-call\s*$",
                       re.MULTILINE)
_DECLARED = re.compile(r"^local (?:function )?([A-Za-z_][\w, ]*?)\s*(?:=|\(|--|$)",
                       re.MULTILINE)
# Told (script name, seconds) after every script call: how the operator times its scripts
# without the store knowing about metrics.
ScriptObserver = Callable[[str, float], None]
# One script call: its name, keys and arguments.
Call = tuple[str, tuple[str, ...] | list[str], list[Any]]
# The script groups: the slot a script works in, and the keys every script of it takes.
GROUPS: dict[str, tuple[str, ...]] = {"flow": FLOW_KEY_NAMES, "queue": QUEUE_KEY_NAMES}
# After a server or user refused functions, how long scripts go by EVALSHA before FCALL is
# tried again (the server may have been upgraded, the user granted FCALL).
FUNCTIONS_RETRY_S = 60.0
# Script calls that concurrent callers (`Scripts.run_many`) make within one turn of the event
# loop go out in one pipeline, up to this many calls; a larger batch goes at once.
BATCH_CALLS = 256


def _read(path: str) -> str:
    """An include by its path under lua/ without ".lua": "flow/_lib", "_clock"."""
    folder = resources.files("kflow.store.lua")
    *dirs, name = path.split("/")
    for part in dirs:
        folder = folder.joinpath(part)
    return folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _resolve(source: str, seen: frozenset[str] = frozenset()) -> str:
    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in seen:
            raise ValueError(f"Lua include cycle through {name}.lua")
        return _resolve(_read(name), seen | {name})

    return _INCLUDE.sub(include, source)


def _group_files(group: str) -> dict[str, str]:
    """verb -> source as written (includes not inlined), for the group's scripts."""
    out: dict[str, str] = {}
    for entry in resources.files(f"kflow.store.lua.{group}").iterdir():
        match = _SCRIPT_NAME.match(entry.name)
        if match:
            out[match.group(1)] = entry.read_text("utf-8")
    return dict(sorted(out.items()))


def _key_count(name: str, source: str) -> int:
    """How many of its group's keys the script `<group>/<verb>` takes: all of them, or the
    first through the one its `-- @keys-through` line names."""
    group_keys = GROUPS[name.split("/")[0]]
    through = _KEYS_THROUGH.search(source)
    if not through:
        return len(group_keys)
    if through.group(1) not in group_keys:
        raise ValueError(f"lua/{name}.lua: @keys-through {through.group(1)} is not a key of "
                         f"its group ({', '.join(group_keys)})")
    return group_keys.index(through.group(1)) + 1


@cache
def script_sources() -> dict[str, tuple[int, str]]:
    """"<group>/<verb>" -> (key count, full source with includes inlined), for every script
    `lua/<group>/<verb>.lua` (files starting with "_" are includes)."""
    return {f"{group}/{verb}": (_key_count(f"{group}/{verb}", source), _resolve(source))
            for group in GROUPS
            for verb, source in _group_files(group).items()}


@dataclass(frozen=True)
class Library:
    """A group's scripts as one Redis function library: its name and source carry a hash of
    the source, so two kflow versions on one server (a rolling upgrade) each call their own."""

    name: str
    source: str
    functions: dict[str, str]  # "<group>/<verb>" -> function name


def _include_order(includes: list[list[str]]) -> list[str]:
    """One order of all includes that keeps each script's order (its includes rely on the
    ones before them)."""
    after: dict[str, set[str]] = {}
    for names in includes:
        for i, name in enumerate(names):
            after.setdefault(name, set()).update(names[:i])
    order: list[str] = []
    while len(order) < len(after):
        ready = [n for n in after if n not in order and after[n] <= set(order)]
        if not ready:
            left = sorted(set(after) - set(order))
            raise ValueError(f"Lua includes in conflicting orders: {left}")
        order.append(ready[0])
    return order


def _library_part(name: str, source: str, resets: list[str]) -> str:
    """An include as part of a library: per-call state declared here, set in `resets`."""
    def per_call(match: re.Match[str]) -> str:
        names, value = match.group(1).strip(), match.group(2)
        count = len(names.split(","))
        resets.append(f"  {names} = {value if value else ', '.join(['nil'] * count)}")
        return f"local {names}"

    if _INCLUDE.search(source):
        raise ValueError(f"{name}.lua: an include of a library may not include others")
    return f"-- {name}.lua\n" + _PER_CALL.sub(per_call, source)


@cache
def libraries() -> dict[str, Library]:
    """group -> the library of its scripts: every include once, then one function per script
    that first sets the per-call state (`-- @per-call`) and then runs the script's body."""
    out: dict[str, Library] = {}
    for group in GROUPS:
        files = _group_files(group)
        order = _include_order([_INCLUDE.findall(s) for s in files.values()])
        resets: list[str] = []
        parts = [_library_part(name, _read(name), resets) for name in order]
        declared: dict[str, str] = {}
        for name, part in zip(order, parts, strict=True):
            for found in _DECLARED.findall(part):
                for local in (n.strip() for n in found.split(",")):
                    if local in declared:
                        raise ValueError(f"{name}.lua and {declared[local]}.lua both declare "
                                         f"{local}: in one library the later would hide it")
                    declared[local] = name
        body = "\n".join(parts)
        digest = hashlib.sha1(
            (body + "".join(files.values())).encode()).hexdigest()[:16]
        functions: dict[str, str] = {}
        registered: list[str] = []
        for verb, source in files.items():
            fname = f"kflow_{digest}_{group}_{verb.replace('-', '_')}"
            functions[f"{group}/{verb}"] = fname
            flags = _FLAGS.search(source)
            flag_list = ", ".join(f"'{f}'" for f in flags.group(1).split()) if flags else ""
            registered.append(
                f"redis.register_function{{function_name = '{fname}', flags = {{{flag_list}}},\n"
                f"  callback = function(keys, args)\n  begin_call(keys, args)\n"
                f"{_INCLUDE.sub('', source)}\nend}}")
        source = "\n".join([
            f"#!lua name=kflow_{group}_{digest}",
            "-- kflow's " + group + " scripts (kflow/store/lua); generated, do not edit here.",
            "local KEYS, ARGV", body,
            "local function begin_call(keys, args)", "  KEYS, ARGV = keys, args", *resets,
            "end", *registered])
        out[group] = Library(f"kflow_{group}_{digest}", source, functions)
    return out


def _not_loaded(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "function not found" in str(reply).lower()


def _by_evalsha(reply: Any) -> bool:
    """A function call refused before it ran that EVALSHA may still run. Out of memory, Redis
    refuses a function that may write outright, but lets a script without flags run until its
    first write that needs memory: a script that first frees some (dropping a deleted
    flow's leases) goes on as it did before functions."""
    return isinstance(reply, OutOfMemoryError)


def _functions_refused(reply: Any) -> bool:
    """The server has no functions, or this user may not call or load them."""
    if not isinstance(reply, ResponseError):
        return False
    text = str(reply).lower()
    return (isinstance(reply, NoPermissionError) and ("fcall" in text or "function" in text)) \
        or ("unknown command" in text and ("fcall" in text or "function" in text))


class Scripts:
    """The registered scripts of one client. Callers pass every key of the script's group;
    `run` checks their number and sends the script the ones it takes (`-- @keys-through`),
    and tells the observers (`observe`) how long each call took."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._observers: list[ScriptObserver] = []
        self._scripts = {
            name: (nkeys, client.register_script(source))
            for name, (nkeys, source) in script_sources().items()
        }
        # Per script, stated once for the calls: its group's key count and the keys it takes.
        self._key_counts = {name: (len(GROUPS[name.split("/")[0]]), nkeys)
                            for name, (nkeys, _) in self._scripts.items()}
        self._functions = {name: fname for lib in libraries().values()
                           for name, fname in lib.functions.items()}
        self._refused_at: float | None = None  # when FCALL or FUNCTION LOAD was refused
        self._loading: asyncio.Lock | None = None
        # Calls waiting for this turn of the event loop to end (`_batched`), each caller's
        # calls with the future of their replies, and the pipelines in flight.
        self._waiting: list[tuple[list[Call], asyncio.Future[list[Any]]]] = []
        self._waiting_calls = 0
        self._send_soon: asyncio.Handle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def use_functions(self) -> bool:
        """Whether calls go by FCALL now (else by EVALSHA, for FUNCTIONS_RETRY_S)."""
        return self._refused_at is None or \
            time.monotonic() - self._refused_at >= FUNCTIONS_RETRY_S

    def _refused(self, exc: BaseException) -> None:
        if self.use_functions:
            log.warning("Redis refused functions (%s): kflow's scripts go by EVALSHA for the "
                        "next %.0f s", exc, FUNCTIONS_RETRY_S)
        self._refused_at = time.monotonic()

    def _keys_of(self, name: str, keys: tuple[str, ...] | list[str]
                 ) -> tuple[str, ...] | list[str]:
        """The keys `name` takes, of the group's keys the caller passed."""
        group, nkeys = self._key_counts[name]
        if len(keys) != group:
            raise ValueError(f"script {name}.lua is called with the {group} keys of its group, "
                             f"got {len(keys)}")
        return keys if nkeys == group else keys[:nkeys]

    async def load(self) -> None:
        """Load the libraries this client calls, unless the server has them (after a
        restart, FUNCTION FLUSH, a failover to a server that never had them)."""
        if self._loading is None:
            self._loading = asyncio.Lock()
        from redis.asyncio.cluster import RedisCluster

        async with self._loading:
            # Each master of a cluster on its own: one that has them must not stop the others.
            targets: list[dict[str, Any]] = [{}]
            if isinstance(self._client, RedisCluster):
                targets = [{"target_nodes": [n]} for n in self._client.get_primaries()]
            for lib in libraries().values():
                for target in targets:
                    try:
                        await self._client.execute_command("FUNCTION", "LOAD", lib.source,
                                                           **target)
                    except ResponseError as exc:
                        if "already exists" not in str(exc):
                            raise

    def observe(self, observer: ScriptObserver) -> None:
        """Call `observer(name, seconds)` after every script call, failed ones included."""
        self._observers.append(observer)

    def _ran(self, names: list[str], started: float) -> None:
        seconds = time.perf_counter() - started
        for observer in self._observers:
            for name in names:
                observer(name, seconds)

    async def _fcall(self, name: str, keys: tuple[str, ...] | list[str], args: list[Any]
                     ) -> Any:
        return await self._client.fcall(self._functions[name], len(keys), *keys, *args)

    async def _evalsha(self, name: str, keys: tuple[str, ...] | list[str], args: list[Any]
                       ) -> Any:
        return await self._scripts[name][1](keys=list(keys), args=args)

    async def _call(self, name: str, keys: tuple[str, ...] | list[str], args: list[Any]
                    ) -> Any:
        async def send(calls: list[Call], functions: bool) -> list[Any]:
            [(name, keys, args)] = calls
            try:
                if functions:
                    return [await self._fcall(name, keys, args)]
                return [await self._evalsha(name, keys, args)]
            except ResponseError as exc:
                return [exc]

        [reply] = await self._fallback([(name, keys, args)], send)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _fallback(self, calls: list[Call],
                        send: Callable[[list[Call], bool], Awaitable[list[Any]]]) -> list[Any]:
        """Send `calls` by FCALL (or EVALSHA while functions are refused) with `send`, which
        returns one reply or ResponseError per call, and apply the rules of falling back:
        calls that found their library missing ran nothing, so it is loaded and they are
        sent again; calls refused functions (no FCALL, no right to it) go by EVALSHA, and
        so do all calls for FUNCTIONS_RETRY_S; a function refused out of memory is sent once
        by EVALSHA (`_by_evalsha`). Nothing that ran is ever sent again."""
        if not self.use_functions:
            return await send(calls, False)
        replies = await send(calls, True)
        missing = [i for i, r in enumerate(replies) if _not_loaded(r)]
        by_fcall = set(range(len(calls)))
        if missing:
            functions = await self._load_or_refuse()
            if not functions:
                by_fcall.difference_update(missing)
            for i, reply in zip(missing, await send([calls[i] for i in missing], functions),
                                strict=True):
                replies[i] = reply
        refused = [i for i in sorted(by_fcall)
                   if _functions_refused(replies[i]) or _by_evalsha(replies[i])]
        if refused:
            why = next((replies[i] for i in refused if _functions_refused(replies[i])), None)
            if why is not None:
                self._refused(why)
            for i, reply in zip(refused, await send([calls[i] for i in refused], False),
                                strict=True):
                replies[i] = reply
        return replies

    async def run(self, name: str, keys: tuple[str, ...] | list[str], args: list[Any]) -> Any:
        keys = self._keys_of(name, keys)
        started = time.perf_counter()
        try:
            return await self._call(name, keys, args)
        finally:
            self._ran([name], started)

    async def run_many(self, calls: list[Call]) -> list[Any]:
        """Run several scripts, each with its own keys; one reply or exception per call.

        On a single server they go out in one pipeline (one round trip, no transaction: each
        script is atomic on its own, as with separate calls), in order, together with the
        calls of other callers made in the same turn of the event loop (`_batched`). On a
        cluster they go the same way in a cluster pipeline, one per master, in order only
        among the calls of one master; while functions are refused, each on its own.
        """
        if not calls:
            return []
        calls = [(name, self._keys_of(name, keys), args) for name, keys, args in calls]
        started = time.perf_counter()
        try:
            return await self._batched(calls)
        finally:
            # Each script waited for the whole round trip that carried it.
            self._ran([name for name, _, _ in calls], started)

    def _batched(self, calls: list[Call]) -> asyncio.Future[list[Any]]:
        """The replies of `calls`, sent in one pipeline with the calls of every other caller
        of this turn of the event loop: fifty adders adding a flow each pay one round trip
        together, not fifty. A caller's calls stay together and in order; a caller that is
        cancelled while it waits does not stop the others' calls."""
        loop = asyncio.get_running_loop()
        replies: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append((calls, replies))
        self._waiting_calls += len(calls)
        if self._waiting_calls >= BATCH_CALLS:
            self._send_waiting()
        elif self._send_soon is None:
            self._send_soon = loop.call_soon(self._send_waiting)
        return replies

    def _send_waiting(self) -> None:
        if self._send_soon is not None:
            self._send_soon.cancel()
            self._send_soon = None
        batch, self._waiting, self._waiting_calls = self._waiting, [], 0
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[list[Call], asyncio.Future[list[Any]]]]) -> None:
        try:
            replies = await self._fallback([c for calls, _ in batch for c in calls],
                                           self._pipeline)
        except BaseException as exc:
            for _, waiter in batch:
                if waiter.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    waiter.cancel()
                else:
                    waiter.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for calls, waiter in batch:
            if not waiter.done():
                waiter.set_result(replies[start:start + len(calls)])
            start += len(calls)

    async def _load_or_refuse(self) -> bool:
        """Load the libraries; False when Redis refuses (functions, or memory for them):
        the calls then go by EVALSHA."""
        try:
            await self.load()
        except ResponseError as exc:
            if _functions_refused(exc):
                self._refused(exc)
            elif not _by_evalsha(exc):
                raise
            return False
        return True

    async def _pipeline(self, calls: list[Call], functions: bool) -> list[Any]:
        import redis.asyncio

        if not functions and not isinstance(self._client, redis.asyncio.Redis):
            # A cluster pipeline cannot carry EVALSHA: each call goes on its own.
            return list(await asyncio.gather(*(self._evalsha(v, k, a) for v, k, a in calls),
                                             return_exceptions=True))
        pipe = self._client.pipeline(transaction=False)
        for name, keys, args in calls:
            if functions:
                pipe.fcall(self._functions[name], len(keys), *keys, *args)
            else:
                await self._scripts[name][1](keys=list(keys), args=args, client=pipe)
        return list(await pipe.execute(raise_on_error=False))
