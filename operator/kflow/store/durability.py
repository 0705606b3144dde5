"""Can this Redis keep kflow's state? Eviction must be off; persistence should be on.

Redis is the source of truth for node state and results (docs/DESIGN.md §4): a key it evicts
to make room takes a flow's progress with it, and a server that restarts without persistence
comes back empty. `read_durability` asks each server (each primary of a Redis Cluster) what it
is configured to do; `eviction_refusal` and `persistence_of` decide from those values alone, so
the decisions are tested without a server. Nothing here reads the environment or Kubernetes.

CONFIG is often disabled or renamed on managed Redis; then the policy comes from INFO memory,
and AOF from INFO persistence. RDB save points appear only in CONFIG GET save: with CONFIG
unavailable and AOF off, whether snapshots are taken is unknown (not assumed either way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis import exceptions as redis_errors

from kflow.store.codec import text
from kflow.store.connect import RedisTarget, connect_to

NOEVICTION = "noeviction"
# Where a person reads what to do about both findings.
GUIDE = "docs/redis-production.md"


class Persistence(StrEnum):
    """What survives a restart of the server."""

    AOF = "aof"  # the append-only file: every write, fsynced as appendfsync says
    RDB = "rdb"  # snapshots at the save points: writes since the last one are lost
    OFF = "off"  # nothing: a restart comes back empty
    UNKNOWN = "unknown"  # AOF off and the save points unreadable (CONFIG unavailable)


@dataclass(frozen=True)
class Durability:
    """What one Redis server reports about eviction and persistence.

    None means the server would not say (CONFIG unavailable and INFO without the field).
    """

    server: str  # host:port, for messages
    maxmemory_policy: str | None
    aof_enabled: bool | None
    # CONFIG GET save: "" when no RDB save point is configured, e.g. "3600 1 300 100".
    save: str | None
    config_readable: bool  # False: CONFIG is disabled, renamed or not permitted


def eviction_refusal(reading: Durability) -> str | None:
    """Why kflow must not run on this server, or None when it may (policy noeviction).

    An unknown policy is not refused: nothing shows the server evicts.
    """
    policy = reading.maxmemory_policy
    if policy is None or policy == NOEVICTION:
        return None
    return (
        f"Redis at {reading.server} has maxmemory-policy {policy}: when it reaches maxmemory "
        f"it deletes keys to make room, and a flow whose keys are deleted loses its nodes' "
        f"states, fencing tokens and results, so finished work is lost or runs again. kflow "
        f"needs maxmemory-policy {NOEVICTION} (at maxmemory, writes then fail and flows "
        f"wait; nothing is lost). Set it with the line `maxmemory-policy {NOEVICTION}` in "
        f"redis.conf, `CONFIG SET maxmemory-policy {NOEVICTION}` followed by CONFIG REWRITE, "
        f"the Redis chart's configuration value, or the managed service's parameter group; "
        f"see {GUIDE}."
    )


def persistence_of(reading: Durability) -> Persistence:
    """AOF if it is on; else RDB if save points are configured; else off (or unknown)."""
    if reading.aof_enabled:
        return Persistence.AOF
    if reading.save is None:
        return Persistence.UNKNOWN
    if reading.save.strip():
        return Persistence.RDB
    if reading.aof_enabled is None:
        return Persistence.UNKNOWN
    return Persistence.OFF


def persistence_warning(reading: Durability) -> str | None:
    """What to tell the operator's user about a server without (known) persistence."""
    found = persistence_of(reading)
    change = ("`appendonly yes` with `appendfsync everysec` in redis.conf (or CONFIG SET "
              f"appendonly yes, then CONFIG REWRITE); see {GUIDE}")
    if found is Persistence.OFF:
        return (f"Redis at {reading.server} has no persistence (appendonly no and no RDB save "
                f"points): if it restarts, every flow's node states and results are gone. "
                f"Set {change}.")
    if found is Persistence.UNKNOWN:
        return (f"Redis at {reading.server} has appendonly off and CONFIG is unavailable, so "
                f"whether it takes RDB snapshots is unknown: without them a restart loses "
                f"every flow's state. Make sure the service persists data, ideally with "
                f"{change}.")
    return None


async def read_durability(client: Any) -> list[Durability]:
    """One reading per server: the server, or every primary of a Redis Cluster.

    `client` is what `kflow.store.connect.connect` returns. A CONFIG that is missing, renamed
    or forbidden (an error reply) falls back to INFO; connection errors propagate.
    """
    from redis.asyncio.cluster import RedisCluster

    cluster = isinstance(client, RedisCluster)
    route: dict[str, Any] = {"target_nodes": RedisCluster.PRIMARIES} if cluster else {}

    def per_server(reply: Any) -> dict[str, Any]:
        if cluster:
            return dict(reply)
        kwargs = client.connection_pool.connection_kwargs
        name = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        return {str(name): reply}

    memory = per_server(await client.info("memory", **route))
    persistence = per_server(await client.info("persistence", **route))
    policies: dict[str, Any] = {}
    saves: dict[str, Any] = {}
    config_readable = True
    try:
        policies = per_server(await client.config_get("maxmemory-policy", **route))
        saves = per_server(await client.config_get("save", **route))
    except redis_errors.ResponseError:
        config_readable = False
    readings = []
    for server in sorted(memory):
        policy = _text(_config_value(policies.get(server), "maxmemory-policy"))
        if policy is None:
            policy = _text(_info_field(memory[server], "maxmemory_policy"))
        aof = _info_field(persistence.get(server), "aof_enabled")
        readings.append(Durability(
            server=server,
            maxmemory_policy=policy,
            aof_enabled=None if aof is None else str(aof) == "1",
            save=_text(_config_value(saves.get(server), "save")) if config_readable else None,
            config_readable=config_readable,
        ))
    return readings


async def read_when_reachable(target: RedisTarget, *,
                              waiting: Callable[[str, float], None] | None = None,
                              max_delay: float = 10.0) -> list[Durability]:
    """`read_durability` over a connection of its own, retried while Redis cannot be reached
    (`waiting(error, seconds)` is told before each pause); a refused password raises at once."""
    delay = 0.5
    while True:
        try:
            client = await connect_to(target, max_connections=2)
            try:
                return await read_durability(client)
            finally:
                await client.aclose()
        except redis_errors.AuthenticationError:
            raise
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            if waiting is not None:
                waiting(str(exc) or type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def _info_field(info: Any, field: str) -> Any:
    """A field of one server's parsed INFO reply; None when the reply or the field is missing."""
    return info.get(field) if isinstance(info, dict) else None


def _config_value(reply: Any, name: str) -> Any:
    """The value of `name` in a CONFIG GET reply (str or bytes keys); None when absent."""
    if not isinstance(reply, dict):
        return None
    for key, value in reply.items():
        if _text(key) == name:
            return value
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(text(value))
