"""A loopback TCP proxy in front of a real redis-server that can lose one reply on purpose."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


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
