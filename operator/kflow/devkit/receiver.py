"""A webhook receiver for tests and demos: an HTTP server on the host's loopback, in a thread of
its own, that keeps every request it gets (a Flow's `spec.notify` CloudEvents)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    query: str
    content_type: str
    body: dict[str, Any]


@dataclass
class Receiver:
    """`start()` serves on 127.0.0.1:`port` (a free one when 0); `stop()` closes it, so the
    same URL can be down, then up again. The first answers come from `answers` (HTTP statuses),
    then 200."""

    port: int = 0
    answers: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        ready = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            loop.run_until_complete(serve())
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="kflow-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the receiver did not start on port {self.port}")

    def stop(self) -> None:
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is None or runner is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._runner = self._thread = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        with self._lock:
            self.got.append(Received(request.path, request.query_string,
                                     request.headers.get("Content-Type", ""),
                                     json.loads(raw) if raw else {}))
            status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status)

    def events(self) -> list[dict[str, Any]]:
        """The bodies of the requests answered 2xx or not, in order."""
        with self._lock:
            return [r.body for r in self.got]

    def wait(self, count: int, timeout: float = 60) -> list[Received]:
        """Wait until `count` requests came; returns them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.got) >= count:
                    return list(self.got)
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.got)} requests, not {count}, "
                             f"within {timeout}s")
