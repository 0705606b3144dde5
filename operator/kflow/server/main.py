"""Run the kflow API server: settings, the Kubernetes client, Redis, and the HTTP listener."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from kflow.kube.k8s import KubeApi, load_config
from kflow.server.app import Context, Redis, build_app
from kflow.server.auth import Gatekeeper
from kflow.settings import RedisSettings, ServerSettings
from kflow.store.connect import connect_to

log = logging.getLogger("kflow.server")

WEB_DIR = Path(__file__).parent / "web"
SHUTDOWN_TIMEOUT_S = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kflow server",
        description="Serve the kflow API (docs/API.md) and the web view. Settings come from "
                    "KFLOW_SERVER_* and KFLOW_REDIS_* variables; the flags below override "
                    "them. Kubernetes: in-cluster ServiceAccount, else KUBECONFIG.")
    parser.add_argument("--listen", metavar="ADDRESS", help="address to bind "
                        "(KFLOW_SERVER_LISTEN, default 0.0.0.0)")
    parser.add_argument("--port", type=int, metavar="PORT",
                        help="port to bind (KFLOW_SERVER_PORT, default 8080)")
    parser.add_argument("--redis", metavar="URL", help="Redis URL (KFLOW_REDIS_URL)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser


def make_context(settings: ServerSettings, redis_settings: RedisSettings,
                 api: KubeApi) -> Context:
    async def open_client(max_connections: int) -> Any:
        return await connect_to(redis_settings, max_connections=max_connections)

    gate = Gatekeeper(api, token_ttl=settings.token_ttl_seconds,
                      access_ttl=settings.access_ttl_seconds,
                      max_entries=settings.cache_entries)
    return Context(api=api, gate=gate,
                   redis=Redis(open_client, settings.streams, redis_settings.prefix),
                   settings=settings,
                   web_dir=Path(settings.web_dir) if settings.web_dir else WEB_DIR)


async def serve(settings: ServerSettings, redis_settings: RedisSettings) -> None:
    load_config()
    ctx = make_context(settings, redis_settings, KubeApi())
    runner = web.AppRunner(build_app(ctx), access_log=None)
    await runner.setup()
    # Open event streams are cut after this on shutdown: their callers resume with
    # Last-Event-ID, and a rollout does not wait for the slowest browser tab.
    site = web.TCPSite(runner, settings.listen, settings.port,
                       shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await site.start()
    log.info("kflow server listening on http://%s:%d (Redis prefix %r)", settings.listen,
             settings.port, redis_settings.prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("kflow server stopping")
        await runner.cleanup()
        await ctx.redis.close()


def run_server(argv: Sequence[str]) -> int:
    """`kflow server [--listen A] [--port P] [--redis URL] [-v]`; returns the exit code."""
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {k: v for k, v in (("listen", args.listen),
                                                    ("port", args.port)) if v is not None}
    settings = ServerSettings(**overrides)
    redis_settings = RedisSettings(**({"url": args.redis} if args.redis else {}))
    timeout = redis_settings.socket_timeout
    if timeout is not None and settings.keepalive_seconds >= timeout:
        # An event stream waits on Redis (XREAD BLOCK) up to keepalive_seconds per read.
        raise SystemExit(
            f"KFLOW_SERVER_KEEPALIVE_SECONDS ({settings.keepalive_seconds}) must be below "
            f"KFLOW_REDIS_SOCKET_TIMEOUT ({timeout}): an event stream's blocking read would "
            "time out; lower the first or raise the second")
    asyncio.run(serve(settings, redis_settings))
    return 0
