"""Open the async Redis client every kflow process uses: single server or cluster, one pool."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, DataError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # the sentinel redis-py's hiredis parser reads "no whole reply yet" as
    from redis._parsers.hiredis import NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - another redis-py layout: never matches a reply
    NOT_ENOUGH_DATA = object()

# Connections per process (per cluster node with Redis Cluster). Callers that run more
# concurrent commands than this wait for a free connection instead of failing: redis-py's
# default pool raises MaxConnectionsError past 100, which under load turned into lost leases.
MAX_CONNECTIONS = 64

# TCP keepalive of every connection: an idle peer that vanished (node lost, half-open after a
# network cut) is found after IDLE + INTVL * CNT seconds instead of the kernel's 2 h default.
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_PROBES = 3
# Sent data left unacknowledged this long closes the connection (Linux TCP_USER_TIMEOUT): a
# command written into a cut network fails in seconds, not after ~15 min of retransmissions.
UNACKED_LIMIT_S = 20


def keepalive_options() -> dict[int, int]:
    """The SOL_TCP options above, for the ones this platform has (all of them on Linux)."""
    wanted = {"TCP_KEEPIDLE": KEEPALIVE_IDLE_S, "TCP_KEEPINTVL": KEEPALIVE_INTERVAL_S,
              "TCP_KEEPCNT": KEEPALIVE_PROBES, "TCP_USER_TIMEOUT": UNACKED_LIMIT_S * 1000}
    return {getattr(socket, name): value for name, value in wanted.items()
            if hasattr(socket, name)}


_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # the optional "fast" extra: commands packed in C (redis-py's async client packs in Python)
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - the extra is not installed
    _hiredis_pack = None


class _CancellableWrites:
    """Bound a command's write with `asyncio.timeout`, not redis-py's `asyncio.wait_for`.

    On Python 3.11, `asyncio.wait_for` returns the result and drops a cancellation that
    arrives as the awaited write finishes (python/cpython#86296, fixed in 3.12): with a socket
    timeout set, redis-py bounds every write that way, so a task cancelled inside a command
    kept running (tests/integration/test_redis_client.py). The read is bounded by
    `asyncio.timeout` already, which honours cancellation.
    """

    socket_timeout: float | None
    health_check_interval: float
    next_health_check: float
    _parser: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command in the Redis protocol, packed by hiredis when it is installed.

        Every flow script names its ~20 keys, so packing in Python was the largest single
        cost of a worker's client (bench/vs-bullmq, "profile"). A name with a space ("CONFIG
        GET") is split as redis-py splits it; a value hiredis cannot pack (a bool, None) is a
        DataError, as with redis-py's own encoder.
        """
        if _hiredis_pack is None:
            return super().pack_command(*args)  # type: ignore[misc,no-any-return]
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [_hiredis_pack(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from None

    async def read_response(self, disable_decoding: bool = False,
                            timeout: float | None = None, *, disconnect_on_error: bool = True,
                            push_request: bool | None = False) -> Any:
        """A reply the parser holds already is returned without arming a timer.

        redis-py bounds every read with `asyncio.timeout`, whose timer cost about a tenth of
        a worker's CPU (bench/vs-bullmq, "profile"); after a pipeline's first reply the
        others have usually arrived with it. Anything else (nothing buffered yet, RESP3, a
        read with its own timeout) goes through redis-py's read, timer included.
        """
        reader = getattr(self._parser, "_reader", None)
        response: Any = NOT_ENOUGH_DATA
        if reader is not None and timeout is None and not push_request \
                and getattr(self, "protocol", 2) not in (3, "3") \
                and getattr(self._parser, "_connected", False):
            response = reader.gets(False) if disable_decoding else reader.gets()
        if response is NOT_ENOUGH_DATA:  # not a whole reply yet
            return await super().read_response(  # type: ignore[misc]
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error,
                push_request=push_request)
        if isinstance(response, list) and response and \
                isinstance(response[0], RedisConnectionError):
            response = response[0]
        if isinstance(response, RedisConnectionError):
            if disconnect_on_error:  # as redis-py does with any error of a read
                await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise response
        if self.health_check_interval:
            self.next_health_check = (asyncio.get_running_loop().time()
                                      + self.health_check_interval)
        if isinstance(response, ResponseError):
            raise response from None
        return response

    async def can_read_destructive(self) -> bool:
        """Whether the connection holds data nobody read, or its server closed it: the pool
        asks before every command it sends, so a stale reply is never taken for the next.

        redis-py finds out by reading with a zero timeout, a timer armed and a read cancelled
        at every checkout (~5% of a worker's CPU, bench/vs-bullmq "profile"). A reply whole
        in the parser, bytes in the stream's buffer or the stream's end say the same at once.
        Without hiredis, or where the stream is not asyncio's, redis-py's check runs.
        """
        parser = self._parser
        reader = getattr(parser, "_reader", None)
        stream = getattr(parser, "_stream", None)
        buffered = getattr(stream, "_buffer", None)
        if reader is None or stream is None or not isinstance(buffered, bytearray) \
                or not getattr(parser, "_connected", False):
            return await super().can_read_destructive()  # type: ignore[misc,no-any-return]
        if reader.gets() is not NOT_ENOUGH_DATA:
            return True
        return bool(buffered) or bool(stream.at_eof())

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        limit = self.socket_timeout
        self.socket_timeout = None  # redis-py then writes without wait_for
        try:
            async with asyncio.timeout(limit):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            where = self._host_error()  # type: ignore[attr-defined]
            raise RedisTimeoutError(f"Timeout sending a command to {where} (or checking the "
                                    "connection first)") from None
        finally:
            self.socket_timeout = limit


class BoundedConnection(_CancellableWrites, Connection):
    """A plain TCP connection whose timeouts never swallow a cancellation."""


class BoundedSSLConnection(_CancellableWrites, SSLConnection):
    """A TLS connection whose timeouts never swallow a cancellation."""


class RedisTarget(Protocol):
    """Where Redis is and how to talk to it; `kflow.settings.RedisSettings` is one.

    The store takes these as values and reads no environment itself.
    """

    @property
    def url(self) -> str: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def tls_ca_file(self) -> str | None: ...
    @property
    def connect_timeout(self) -> float | None: ...
    @property
    def socket_timeout(self) -> float | None: ...
    @property
    def health_check_interval(self) -> float: ...
    @property
    def retries(self) -> int: ...
    @property
    def retry_backoff_base(self) -> float: ...
    @property
    def retry_backoff_cap(self) -> float: ...


async def connect_to(target: RedisTarget, *, max_connections: int = MAX_CONNECTIONS) -> Any:
    """A client for the Redis `target` describes (see `connect`)."""
    return await connect(target.url, username=target.username, password=target.password,
                         tls=target.tls, tls_ca_file=target.tls_ca_file,
                         connect_timeout=target.connect_timeout,
                         socket_timeout=target.socket_timeout,
                         health_check_interval=target.health_check_interval,
                         retries=target.retries, retry_backoff_base=target.retry_backoff_base,
                         retry_backoff_cap=target.retry_backoff_cap,
                         max_connections=max_connections)


# The defaults of `connect` are those of `kflow.settings.RedisSettings` (documented there).
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_SOCKET_TIMEOUT_S = 30.0
DEFAULT_HEALTH_CHECK_S = 15.0
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_BASE_S = 0.1
DEFAULT_BACKOFF_CAP_S = 2.0


def retry_policy(retries: int, base: float, cap: float) -> Retry:
    """redis-py's retry: up to `retries` more tries on a connection error or timeout, after
    exponential backoff with full jitter (random up to min(cap, base * 2**n) seconds).

    A retried command may have run on the server already (its reply was lost). kflow's
    writes are safe to repeat: a script that settles an attempt is fenced by the attempt's
    token and refuses a second settlement; the others set values or are no-ops when repeated
    (docs/redis-production.md, "Timeouts and retries").
    """
    return Retry(ExponentialWithJitterBackoff(cap=cap, base=base), retries,
                 supported_errors=(RedisConnectionError, RedisTimeoutError))


def unreachable_reason(exc: BaseException) -> str | None:
    """Why Redis could not be reached, when `exc` says it could not (a refused or lost
    connection, a timeout, a server still loading its data); None for any other error."""
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return None  # reached, but refused: a setting to fix, not an outage to wait out
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return f"{type(exc).__name__}: {exc}"
    return None


class _Cluster(RedisCluster):
    """redis-py's cluster client, finding an FCALL's slot from its keys as it does EVALSHA's.

    For FCALL it asks a server which arguments are keys (COMMAND GETKEYS) before every call:
    one more round trip and server call for each script (bench/RESULTS.md, "Redis Cluster
    scaling"). FCALL names its keys as EVALSHA does (function, key count, keys, arguments),
    so it takes EVALSHA's path.
    """

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if isinstance(command, str) and command.upper() in ("FCALL", "FCALL_RO"):
            command = "EVALSHA"
        return await super()._determine_slot(command, *args)


async def connect(url: str, *, username: str | None = None, password: str | None = None,
                  tls: bool = False, tls_ca_file: str | None = None,
                  connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT_S,
                  socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT_S,
                  health_check_interval: float = DEFAULT_HEALTH_CHECK_S,
                  retries: int = DEFAULT_RETRIES,
                  retry_backoff_base: float = DEFAULT_BACKOFF_BASE_S,
                  retry_backoff_cap: float = DEFAULT_BACKOFF_CAP_S,
                  max_connections: int = MAX_CONNECTIONS) -> Any:
    """A client for `url`: `RedisCluster` when the server runs in cluster mode.

    Asking the server (INFO cluster) instead of taking a flag means the same URL works for a
    single Redis and for any node of a Redis Cluster. TLS comes from a `rediss://` URL or
    from `tls=True`; `tls_ca_file` names the CA bundle that signed the server's certificate.
    Timeouts are in seconds (None: as long as the OS waits); a command that hits a connection
    error or a timeout is sent again up to `retries` times (see `retry_policy`).
    """
    extra: dict[str, Any] = {"password": password} if password else {}
    if username:
        extra["username"] = username
    if tls and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    secure = url.startswith("rediss://")
    if tls_ca_file:
        extra["ssl_ca_certs"] = tls_ca_file
    retry = retry_policy(retries, retry_backoff_base, retry_backoff_cap)
    extra |= {"socket_connect_timeout": connect_timeout, "socket_timeout": socket_timeout,
              "socket_keepalive": True, "socket_keepalive_options": keepalive_options(),
              "health_check_interval": health_check_interval}
    connection_class = BoundedSSLConnection if secure else BoundedConnection
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None, retry=retry,
        connection_class=connection_class, **extra)
    pool.connection_class = connection_class  # from_url sets its own for rediss://
    client = aioredis.Redis(connection_pool=pool)
    try:
        info = await client.info("cluster")
    except Exception:
        await client.aclose()
        raise
    if not info.get("cluster_enabled"):
        return client
    await client.aclose()
    # The cluster client has no blocking pool; its per-node limit is raised well above what
    # one process issues at once so that it never raises under a burst. It retries at its
    # own level (its nodes' connections do not), re-reading the slots when a node fails.
    cluster = _Cluster.from_url(url, max_connections=max(1024, max_connections),
                                    retry=retry, **extra)
    # RedisCluster picks the connection class itself: swap in the bounded one before the
    # first connection opens (its nodes read it from the shared connection_kwargs).
    cluster.connection_kwargs["connection_class"] = connection_class
    for node in cluster.startup_nodes:
        node.connection_class = connection_class
    await cluster.initialize()
    return cluster
