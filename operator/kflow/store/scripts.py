"""Load the Lua scripts from `lua/`, resolve their includes, and register them with a client."""

from __future__ import annotations

import asyncio
import re
from functools import cache
from importlib import resources
from typing import Any

_INCLUDE = re.compile(r"^-- @include (\S+)\s*$", re.MULTILINE)
_SCRIPT_NAME = re.compile(r"^([a-z-]+)-(\d+)\.lua$")


def _read(name: str) -> str:
    return resources.files("kflow.store.lua").joinpath(name).read_text(encoding="utf-8")


def _resolve(source: str, seen: frozenset[str] = frozenset()) -> str:
    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in seen:
            raise ValueError(f"Lua include cycle through {name}.lua")
        return _resolve(_read(f"{name}.lua"), seen | {name})

    return _INCLUDE.sub(include, source)


@cache
def script_sources() -> dict[str, tuple[int, str]]:
    """verb -> (key count, full source with includes inlined), for every `verb-N.lua`."""
    out: dict[str, tuple[int, str]] = {}
    for entry in resources.files("kflow.store.lua").iterdir():
        match = _SCRIPT_NAME.match(entry.name)
        if match:
            out[match.group(1)] = (int(match.group(2)), _resolve(entry.read_text("utf-8")))
    return out


class Scripts:
    """The registered scripts of one client; `run` checks the key count against the file name."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._scripts = {
            verb: (nkeys, client.register_script(source))
            for verb, (nkeys, source) in script_sources().items()
        }

    async def run(self, verb: str, keys: tuple[str, ...] | list[str], args: list[Any]) -> Any:
        nkeys, script = self._scripts[verb]
        if len(keys) != nkeys:
            raise ValueError(f"script {verb}-{nkeys}.lua called with {len(keys)} keys")
        return await script(keys=list(keys), args=args)

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
        for verb, keys, args in calls:
            nkeys, script = self._scripts[verb]
            if len(keys) != nkeys:
                raise ValueError(f"script {verb}-{nkeys}.lua called with {len(keys)} keys")
            await script(keys=list(keys), args=args, client=pipe)
        return list(await pipe.execute(raise_on_error=False))
