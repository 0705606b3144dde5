"""`kflow ui`: a local HTTP proxy for the web view. The browser talks to 127.0.0.1; each request
goes on to the kflow API through the API server's service proxy, as the user (the hop with
the kubeconfig's credentials, the user's token in X-Kflow-Token)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from kflow.cli.client import EXIT_ERROR, EXIT_OK, TOKEN_HEADER, KflowApi

# Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), and the browser's
# own credentials, which the API never needs (it takes the token this proxy adds).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "authorization", "cookie",
    TOKEN_HEADER.lower(),
})


def forwarded_headers(headers: dict[str, str] | object) -> dict[str, str]:
    items = headers.items() if hasattr(headers, "items") else []
    return {k: v for k, v in items if k.lower() not in HOP_BY_HOP}


def make_app(api: KflowApi) -> web.Application:
    """The proxy as an aiohttp application (the tests serve it on a free port)."""
    app = web.Application()
    timeout = ClientTimeout(total=None, sock_connect=10, sock_read=None)

    async def start(app: web.Application) -> None:
        connector = TCPConnector(ssl=api.connection.ssl_context())
        app["session"] = ClientSession(connector=connector, timeout=timeout,
                                       auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        session: ClientSession = request.app["session"]
        headers = {**forwarded_headers(request.headers), **api.connection.hop_headers(),
                   TOKEN_HEADER: str(api.connection.token)}
        body = await request.read() if request.can_read_body else None
        try:
            async with session.request(request.method, api.base + request.rel_url.raw_path_qs
                                       if request.rel_url.raw_path_qs != "" else api.base + "/",
                                       headers=headers, data=body,
                                       allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status,
                                              headers=forwarded_headers(upstream.headers))
                if upstream.headers.get("Content-Length") and \
                        "text/event-stream" not in upstream.headers.get("Content-Type", ""):
                    response.content_length = int(upstream.headers["Content-Length"])
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (TimeoutError, OSError) as exc:
            return web.json_response(
                {"error": f"kflow ui: cannot reach the API server {api.connection.host}: {exc}",
                 "reason": "Unavailable", "code": 502}, status=502)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def serve_ui(api: KflowApi, address: str, port: int, namespace: str) -> int:
    """Serve until interrupted; print the URL once listening."""

    async def run() -> int:
        runner = web.AppRunner(make_app(api), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, address, port)
        try:
            await site.start()
        except OSError as exc:
            sys.stderr.write(f"error: cannot listen on {address}:{port}: {exc} (pick another "
                             "--port, or --port 0 for any free one)\n")
            await runner.cleanup()
            return EXIT_ERROR
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        host = f"[{address}]" if ":" in address else address
        upstream = (api.base if api.direct
                    else f"{api.location} through {api.connection.host}'s service proxy")
        print(f"kflow web view: http://{host}:{bound}/ (namespace {namespace}; forwarding to "
              f"{upstream}; Ctrl-C stops)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
        return EXIT_OK

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run())
    return EXIT_OK
