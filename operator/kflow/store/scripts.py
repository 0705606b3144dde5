"""Load the Lua scripts from `lua/<group>/`, resolve their includes, register them with a client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from kflow.store.keys import FLOW_KEY_NAMES, QUEUE_KEY_NAMES

_INCLUDE = re.compile(r"^-- @include (\S+)\s*$", re.MULTILINE)
_SCRIPT_NAME = re.compile(r"^([a-z-]+)\.lua$")
# Told (script name, seconds) after every script call: how the operator times its scripts
# without the store knowing about metrics.
ScriptObserver = Callable[[str, float], None]
# The script groups: the slot a script works in, and the keys every script of it takes.
GROUPS: dict[str, tuple[str, ...]] = {"flow": FLOW_KEY_NAMES, "queue": QUEUE_KEY_NAMES}


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


@cache
def script_sources() -> dict[str, tuple[int, str]]:
    """"<group>/<verb>" -> (key count, full source with includes inlined), for every script
    `lua/<group>/<verb>.lua` (files starting with "_" are includes)."""
    out: dict[str, tuple[int, str]] = {}
    for group, key_names in GROUPS.items():
        for entry in resources.files(f"kflow.store.lua.{group}").iterdir():
            match = _SCRIPT_NAME.match(entry.name)
            if match:
                out[f"{group}/{match.group(1)}"] = (len(key_names),
                                                     _resolve(entry.read_text("utf-8")))
    return out


class Scripts:
    """The registered scripts of one client; `run` checks the key count against the group,
    and tells the observers (`observe`) how long each call took."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._observers: list[ScriptObserver] = []
        self._scripts = {
            name: (nkeys, client.register_script(source))
            for name, (nkeys, source) in script_sources().items()
        }

    def _script(self, name: str, keys: tuple[str, ...] | list[str]) -> Any:
        nkeys, script = self._scripts[name]
        if len(keys) != nkeys:
            raise ValueError(f"script {name}.lua takes the {nkeys} keys of its group, "
                             f"called with {len(keys)}")
        return script

    def observe(self, observer: ScriptObserver) -> None:
        """Call `observer(name, seconds)` after every script call, failed ones included."""
        self._observers.append(observer)

    def _ran(self, names: list[str], started: float) -> None:
        seconds = time.perf_counter() - started
        for observer in self._observers:
            for name in names:
                observer(name, seconds)

    async def run(self, name: str, keys: tuple[str, ...] | list[str], args: list[Any]) -> Any:
        script = self._script(name, keys)
        started = time.perf_counter()
        try:
            return await script(keys=list(keys), args=args)
        finally:
            self._ran([name], started)

    async def run_many(self, calls: list[tuple[str, tuple[str, ...] | list[str], list[Any]]]
                       ) -> list[Any]:
        """Run several scripts, each with its own keys; one reply or exception per call.

        On a single server they go out in one pipeline (one round trip, no transaction: each
        script is atomic on its own, as with separate calls). A cluster client runs them
        concurrently instead, since they touch different slots.
        """
        if not calls:
            return []
        import redis.asyncio

        if not isinstance(self._client, redis.asyncio.Redis):
            return list(await asyncio.gather(*(self.run(v, k, a) for v, k, a in calls),
                                             return_exceptions=True))
        pipe = self._client.pipeline(transaction=False)
        for name, keys, args in calls:
            await self._script(name, keys)(keys=list(keys), args=args, client=pipe)
        started = time.perf_counter()
        try:
            return list(await pipe.execute(raise_on_error=False))
        finally:
            # Each script waited for the whole round trip that carried it.
            self._ran([name for name, _, _ in calls], started)
