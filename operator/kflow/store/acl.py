"""Redis ACL users that fence one namespace: its keys only, and only the commands kflow's node
pods and workers send. The operator's own user (an ACL administrator) keeps them.

Redis checks every command a Lua script runs against the calling user's ACL, keys included,
so a tenant's scripts are fenced like its direct commands. ACLs are per server: on a Redis
Cluster every node gets the same SETUSER. Nothing here reads the environment or Kubernetes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from kflow.store.keys import namespace_key_patterns
from kflow.store.scripts import script_sources

# What a node pod (`kflow-run`) and a worker (`kflow worker`) send, beyond the commands inside
# the Lua scripts (listed from the scripts themselves, `script_commands`); with the reason.
CLIENT_COMMANDS: tuple[tuple[str, str], ...] = (
    ("fcall", "every state change is one of kflow's Lua scripts, run as a Redis Function; "
              "the operator loads their library (a tenant may not: FUNCTION LOAD is global)"),
    ("evalsha", "the same scripts by their SHA1, until the operator has loaded the library "
                "(after a Redis restart or FUNCTION FLUSH) or where the server has no functions"),
    ("script|load", "redis-py loads a script when the server answers NOSCRIPT (after a "
                    "restart or a failover); the script still runs with this user's rights"),
    ("script|exists", "a batch of scripts in one pipeline checks they are loaded first"),
    ("hget", "a node reads its input (node data) and its queue's maxStalled setting"),
    ("hmget", "a node reads its children's states, results and errors"),
    ("zrem", "a worker drops the leases of attempts it settled"),
    ("ping", "the client's health check of idle connections"),
    ("info", "connecting asks INFO cluster whether the server is a Redis Cluster node"),
    ("client|setinfo", "redis-py names its library on every new connection (Redis 7.2+; it "
                       "ignores a refusal, but the server would log one per connection)"),
    ("cluster|slots", "a Redis Cluster client reads the slot map when it connects"),
    ("command", "a Redis Cluster client reads the command table to find each command's keys"),
)
SCRIPT_REASON = "run inside kflow's Lua scripts (store/lua), which Redis checks as this user"
# Granted where the server has them (CLIENT SETINFO came with Redis 7.2): an older server
# refuses an ACL rule naming a command it does not know, and never receives the command.
NEWER_COMMANDS = frozenset({"client|setinfo"})
_UNKNOWN = re.compile(r"modifier '\+([a-z|]+)': Unknown command")

_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")
# add-nodes.lua flushes its buffers through `redis.call(cmd, ...)` with these two.
_INDIRECT = ("HSET", "ZADD")


@cache
def script_commands() -> tuple[str, ...]:
    """Every command a kflow Lua script calls, lower case, sorted."""
    found = {m.lower() for _, source in script_sources().values() for m in _CALL.findall(source)}
    return tuple(sorted(found | {c.lower() for c in _INDIRECT}))


def tenant_commands() -> list[tuple[str, str]]:
    """(command, why) of every command a namespace's user may run."""
    listed = dict(CLIENT_COMMANDS)
    return [*CLIENT_COMMANDS, *((c, SCRIPT_REASON) for c in script_commands() if c not in listed)]


def tenant_user(prefix: str, namespace: str) -> str:
    """The Redis user of `namespace`: `<prefix>-ns-<namespace>`."""
    return f"{prefix}-ns-{namespace}"


def tenant_rules(prefix: str, namespace: str) -> list[str]:
    """The ACL rules of a namespace's user, all of them reset first so that applying them
    again (every operator start) brings an old user up to this version's list. Passwords
    are not in the rules: they are added or replaced on their own."""
    flows, queues = namespace_key_patterns(prefix, namespace)
    return ["on", "resetkeys", f"~{flows}", f"~{queues}", "resetchannels", "-@all",
            *(f"+{command}" for command, _ in tenant_commands())]


@dataclass(frozen=True)
class AdminCheck:
    """Whether the operator's own Redis user may keep the namespaces' users."""

    user: str
    refusal: str | None  # why not; None when it may


async def _on_every_node(client: Any, *args: Any) -> list[Any]:
    """The command's reply from each server: the one, or every node of a cluster."""
    if isinstance(client, RedisCluster):
        return [await client.execute_command(*args, target_nodes=[node])
                for node in client.get_nodes()]
    return [await client.execute_command(*args)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def server_runs(client: Any) -> tuple[str, ...]:
    """Each server's run_id: a new one means that server restarted, and forgot the ACL users
    it held only in memory."""
    replies = await _on_every_node(client, "INFO", "server")
    return tuple(str(r.get("run_id", "")) if isinstance(r, dict) else _text(r) for r in replies)


async def check_admin(client: Any) -> AdminCheck:
    """Can this client's user run ACL SETUSER on every server (asked with ACL DRYRUN, which
    changes nothing)? Needed before tenants are turned on."""
    user = "?"
    try:
        user = _text((await _on_every_node(client, "ACL", "WHOAMI"))[0])
        verdicts = await _on_every_node(client, "ACL", "DRYRUN", user, "ACL", "SETUSER",
                                        "kflow-probe")
    except Exception as exc:
        return AdminCheck(user, f"ACL WHOAMI / ACL DRYRUN failed: {exc}")
    refused = [_text(v) for v in verdicts if _text(v) != "OK"]
    return AdminCheck(user, refused[0] if refused else None)


async def apply_tenant_user(client: Any, prefix: str, namespace: str,
                            passwords: list[str], *, replace_passwords: bool = False) -> str:
    """Create or update the namespace's user on every node; returns its name.

    `passwords` are added to the ones it has; with `replace_passwords` they become its only
    ones (a rotation passes the new and the previous password, so running pods keep working
    until the next rotation).
    """
    user = tenant_user(prefix, namespace)
    secrets = (["resetpass"] if replace_passwords else []) + [f">{p}" for p in passwords]
    rules = tenant_rules(prefix, namespace)
    for _ in range(len(NEWER_COMMANDS) + 1):
        try:
            await _on_every_node(client, "ACL", "SETUSER", user, *rules, *secrets)
            return user
        except ResponseError as exc:
            unknown = _UNKNOWN.search(str(exc))
            if unknown is None or unknown.group(1) not in NEWER_COMMANDS:
                raise
            rules.remove(f"+{unknown.group(1)}")
    raise AssertionError("unreachable: every newer command was dropped")
