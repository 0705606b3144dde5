"""Real redis-servers that misbehave on purpose: one a test may kill, freeze and restart, and a
loopback TCP proxy in front of one that can lose a reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from kflow.cli.redis_server import free_port, start, stop


class LossyProxy:
    """Forwards every byte both ways; `lose_reply_to(marker)` makes the proxy pass the next
    request that contains `marker` to the server, swallow the server's reply and close the
    client's connection: the server ran the command, the client never hears back."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.lost = 0  # replies swallowed so far
        self._marker: bytes | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply_to(self, marker: bytes) -> None:
        self._marker = marker

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        cut = asyncio.Event()
        try:
            await asyncio.gather(self._upstream(client_r, server_w, cut),
                                 self._downstream(server_r, client_w, cut))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            self._tasks.discard(task)

    async def _upstream(self, client_r: asyncio.StreamReader, server_w: asyncio.StreamWriter,
                        cut: asyncio.Event) -> None:
        while data := await client_r.read(65536):
            if self._marker is not None and self._marker in data:
                self._marker = None
                cut.set()
            server_w.write(data)
            await server_w.drain()
        server_w.close()

    async def _downstream(self, server_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                          cut: asyncio.Event) -> None:
        while data := await server_r.read(65536):
            if cut.is_set():
                self.lost += 1
                client_w.transport.abort()  # the reply is dropped with the connection
                return
            client_w.write(data)
            await client_w.drain()
        client_w.close()


@contextlib.asynccontextmanager
async def lossy_proxy(upstream_port: int) -> AsyncIterator[LossyProxy]:
    proxy = LossyProxy(upstream_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


class OwnRedis:
    """A redis-server of the test's own, which the test may stop, freeze and restart."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = start(self.port, self.workdir)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP: the server keeps its connections open and acknowledged but never answers,
        like the far end of a half-open connection; SIGCONT: it answers again, data intact."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.freeze(False)
            stop([self.proc])


@pytest.fixture(name="own_redis")
def own_redis_fixture() -> Iterator[OwnRedis]:
    """A redis-server of the test's own (import this into a test module to use it)."""
    with tempfile.TemporaryDirectory(prefix="kflow-faults-") as tmp:
        server = OwnRedis(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll `check` every 50 ms for up to 30 s."""
    for _ in range(600):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def assert_outage_logged_once(records: list[logging.LogRecord]) -> list[str]:
    """One "Redis unreachable" line, one "reachable again" line, and no traceback; returns
    the messages."""
    messages = [r.getMessage() for r in records]
    assert len([m for m in messages if m.startswith("Redis unreachable: ")]) == 1, messages
    assert len([m for m in messages if m.startswith("Redis reachable again after ")]) == 1, \
        messages
    assert not [r for r in records if r.exc_info], "no traceback for an outage"
    return messages

