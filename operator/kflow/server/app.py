"""The kflow API's routes (docs/API.md): each checks the caller with the gatekeeper, then reads
the Flow objects and the engine, or patches the Flow as `kubectl` would."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes.client.exceptions import ApiException

from kflow.api.ids import FlowId
from kflow.api.models import ANNOTATION_RETRY
from kflow.engine import Engine, FlowNotFound, FlowSnapshot, NodeNotFound
from kflow.graph.fold import fold
from kflow.kube.k8s import KubeApi
from kflow.server import reads
from kflow.server.auth import Caller, Forbidden, Gatekeeper, Unauthorized
from kflow.settings import ServerSettings
from kflow.store.connect import unreachable_reason
from kflow.store.outage import RedisOutage

log = logging.getLogger("kflow.server")

TOKEN_HEADER = "X-Kflow-Token"
DEFAULT_COLLAPSE = 20  # siblings alike beyond this many are drawn as one group
WEB_MISSING = ("the web view is not built here: `make web` builds it into "
               "operator/kflow/server/web/\n")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer: `{"error", "reason", "code"}`."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


def _error(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": message, "reason": reason, "code": code}, status=code)


@dataclass
class Redis:
    """The engine over the server's Redis client, opened on first use (so the server starts,
    and says 503, while Redis is down); and the second client its event streams wait on."""

    open_client: Callable[[int], Awaitable[Any]]  # max connections -> client
    streams: int
    prefix: str
    _engine: Engine | None = None
    _stream_engine: Engine | None = None
    _clients: list[Any] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def engine(self) -> Engine:
        if self._engine is None:
            async with self._lock:
                if self._engine is None:
                    client = await self.open_client(64)
                    self._clients.append(client)
                    self._engine = Engine(client, prefix=self.prefix)
        return self._engine

    async def stream_engine(self) -> Engine:
        """An engine whose blocking stream reads hold connections of their own pool."""
        if self._stream_engine is None:
            async with self._lock:
                if self._stream_engine is None:
                    client = await self.open_client(self.streams)
                    self._clients.append(client)
                    self._stream_engine = Engine(client, prefix=self.prefix)
        return self._stream_engine

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


@dataclass
class Context:
    """What every route uses; one per server."""

    api: KubeApi
    gate: Gatekeeper
    redis: Redis
    settings: ServerSettings
    web_dir: Path
    outage: RedisOutage = field(default_factory=RedisOutage)
    stream_slots: asyncio.Semaphore | None = None

    def __post_init__(self) -> None:
        self.stream_slots = asyncio.Semaphore(self.settings.streams)


CONTEXT: web.AppKey[Context] = web.AppKey("context", Context)
CALLER = "kflow.caller"


def _token(request: web.Request) -> str | None:
    token = request.headers.get(TOKEN_HEADER, "").strip()
    if token:
        return token
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@web.middleware
async def errors_and_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON; one log line per API request naming the user (never a token)."""
    started = time.monotonic()
    ctx = request.app[CONTEXT]
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.code
        return _error(exc.code, exc.reason, str(exc))
    except (FlowNotFound, NodeNotFound) as exc:  # the Flow object exists, its state not
        status = 404
        return _error(404, "NotFound", not_in_redis(request, exc))
    except Unauthorized as exc:
        status = 401
        return _error(401, "Unauthorized", str(exc))
    except Forbidden as exc:
        status = 403
        return _error(403, "Forbidden", str(exc))
    except web.HTTPException as exc:
        status = exc.status
        return _error(exc.status, exc.reason.replace(" ", ""), exc.text or exc.reason)
    except ApiException as exc:  # the server's own call to the API server failed
        status = 502
        log.warning("%s %s: the API server answered %s: %s", request.method, request.path,
                    exc.status, exc.reason)
        return _error(502, "BadGateway", f"the Kubernetes API server answered {exc.status} "
                      f"({exc.reason}) to the kflow server's own request")
    except Exception as exc:
        reason = unreachable_reason(exc)
        if reason is None:
            log.exception("%s %s failed", request.method, request.path)
            return _error(500, "InternalError", f"{type(exc).__name__}: {exc}")
        status = 503
        ctx.outage.failed(exc, f"{request.method} {request.path}")
        return _error(503, "Unavailable", f"Redis is unreachable ({reason}); flows cannot be "
                      "read or followed until it is back (try again shortly)")
    finally:
        if request.path.startswith("/api/"):
            caller = request.get(CALLER)
            log.info("%s %s %s -> %d (%.0f ms)", caller.username if caller else "-",
                     request.method, request.path_qs, status,
                     (time.monotonic() - started) * 1000)


async def authorized_caller(request: web.Request, verb: str | None = None,
                  namespace: str | None = None) -> Caller:
    ctx = request.app[CONTEXT]
    caller = await ctx.gate.authenticate(_token(request))
    request[CALLER] = caller
    if verb is not None and namespace is not None:
        await ctx.gate.authorize(caller, verb, namespace)
    return caller


def _int_param(request: web.Request, name: str, default: int, most: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "BadRequest", f"{name}={raw!r} is not a whole number") from None
    if not 0 < value <= most:
        raise ApiError(400, "BadRequest", f"{name}={value} is out of range: use 1 to {most}")
    return value


def no_such_flow(namespace: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'Flow "{name}" not found in namespace "{namespace}"')


async def flow_or_404(ctx: Context, namespace: str, name: str) -> dict[str, Any]:
    flow = await ctx.api.read_flow(namespace, name)
    if flow is None:
        raise no_such_flow(namespace, name)
    return flow


def flow_id_of(flow: dict[str, Any]) -> FlowId:
    meta = flow["metadata"]
    return FlowId.of(meta["namespace"], meta["uid"])


async def _snapshot(ctx: Context, flow: dict[str, Any]) -> FlowSnapshot | None:
    """The flow's live counts from Redis; None when Redis has no state for it (not recorded
    yet, or expired): the Flow's status is shown then."""
    engine = await ctx.redis.engine()
    try:
        snapshot = await engine.snapshot(flow_id_of(flow))
    except FlowNotFound:
        return None
    ctx.outage.succeeded()
    return snapshot


def not_in_redis(request: web.Request, exc: FlowNotFound | NodeNotFound) -> str:
    """What a 404 says when Redis lacks the flow of the request's path, or its node."""
    where = f'Flow {request.match_info.get("ns")}/{request.match_info.get("name")}'
    if isinstance(exc, NodeNotFound):
        return f'{where} has no node "{request.match_info.get("node")}"'
    return (f"{where} has no nodes in Redis: not recorded yet, or its state expired after "
            "ttlSecondsAfterFinished")


# ---- routes ------------------------------------------------------------------------------

async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def whoami(request: web.Request) -> web.Response:
    caller = await authorized_caller(request)
    return web.json_response({"username": caller.username, "groups": list(caller.groups)})


async def list_flows(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    namespace = request.match_info["ns"]
    await authorized_caller(request, "list", namespace)
    limit = _int_param(request, "limit", ctx.settings.flow_page_default,
                       ctx.settings.flow_page_max)
    phase, q = request.query.get("phase"), request.query.get("q")
    page = await ctx.api.list_flows(namespace, limit=limit, cont=request.query.get("continue"))
    items = [reads.flow_summary(f) for f in page.get("items") or []]
    # Filtered after the API server's page: a filtered page may hold fewer than `limit`.
    items = [i for i in items if (not phase or i["phase"] == phase)
             and (not q or q in (i["name"] or ""))]
    return web.json_response({"items": items,
                              "continue": (page.get("metadata") or {}).get("continue") or None})


async def get_flow(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    namespace, name = request.match_info["ns"], request.match_info["name"]
    await authorized_caller(request, "get", namespace)
    flow = await flow_or_404(ctx, namespace, name)
    return web.json_response(reads.flow_detail(flow, await _snapshot(ctx, flow)))


async def list_nodes(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    namespace, name = request.match_info["ns"], request.match_info["name"]
    await authorized_caller(request, "get", namespace)
    limit = _int_param(request, "limit", ctx.settings.node_page_default,
                       ctx.settings.node_page_max)
    try:
        state = reads.parse_state(request.query.get("state"))
    except ValueError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from None
    cursor = request.query.get("continue") or "0"
    if not cursor.isdigit():
        raise ApiError(400, "BadRequest", f"continue={cursor!r} is not a cursor this API "
                       "gave out (a whole number)")
    flow = await flow_or_404(ctx, namespace, name)
    engine = await ctx.redis.engine()
    page = await engine.node_page(flow_id_of(flow), cursor=cursor, limit=limit, state=state,
                                  name_glob=reads.name_glob(request.query.get("q")))
    return web.json_response({"items": [reads.node_summary(r) for r in page.rows],
                              "continue": None if page.cursor == "0" else page.cursor})


async def get_node(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    namespace, name = request.match_info["ns"], request.match_info["name"]
    node = request.match_info["node"]
    await authorized_caller(request, "get", namespace)
    flow = await flow_or_404(ctx, namespace, name)
    engine = await ctx.redis.engine()
    detail = await engine.node_detail(flow_id_of(flow), node)
    return web.json_response(reads.node_detail(detail))


async def get_graph(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    namespace, name = request.match_info["ns"], request.match_info["name"]
    await authorized_caller(request, "get", namespace)
    raw = request.query.get("collapse") or str(DEFAULT_COLLAPSE)
    if not raw.isdigit():
        raise ApiError(400, "BadRequest", f"collapse={raw!r} is not a whole number (0: never "
                       "fold)")
    collapse = int(raw)
    flow = await flow_or_404(ctx, namespace, name)
    engine = await ctx.redis.engine()
    snapshot = await engine.snapshot(flow_id_of(flow))
    if collapse == 0 and snapshot.total > ctx.settings.graph_max_nodes:
        raise ApiError(400, "BadRequest", f"Flow {namespace}/{name} has {snapshot.total} "
                       f"nodes, more than {ctx.settings.graph_max_nodes} are drawn only "
                       "folded: use collapse=1 or more")
    nodes = await engine.graph_nodes(flow_id_of(flow))
    return web.json_response(reads.graph_json(fold(nodes, collapse)))


async def get_logs(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    namespace, name = request.match_info["ns"], request.match_info["name"]
    await authorized_caller(request, "get", namespace)
    node = request.query.get("node") or None
    attempt = request.query.get("attempt")
    if attempt is not None and not attempt.isdigit():
        raise ApiError(400, "BadRequest", f"attempt={attempt!r} is not a whole number")
    flow = await flow_or_404(ctx, namespace, name)
    engine = await ctx.redis.engine()
    flow_id = flow_id_of(flow)
    lines = await engine.logs(flow_id, node=node)
    kept = await engine.attempt_logs(flow_id, node) if node else []
    if attempt is not None:
        lines = [line for line in lines if line.get("attempt") == attempt]
        kept = [(a, t) for a, t in kept if a == int(attempt)]
    return web.Response(text=reads.log_text(lines, kept, prefixed=node is None),
                        content_type="text/plain")


async def _steer(request: web.Request, verb: str) -> web.Response:
    ctx = request.app[CONTEXT]
    namespace, name = request.match_info["ns"], request.match_info["name"]
    caller = await authorized_caller(request, "patch", namespace)
    flow = await flow_or_404(ctx, namespace, name)
    status = flow.get("status") or {}
    snapshot = await _snapshot(ctx, flow)
    phase = snapshot.phase if snapshot is not None else status.get("phase")
    patch: dict[str, Any]
    if verb == "retry":
        if not reads.can_retry(phase, status.get("conditions") or []):
            raise ApiError(409, "Conflict", f"Flow {namespace}/{name} is {phase}: only a "
                           "Failed flow (or one whose state was lost) can be retried")
        patch = {"metadata": {"annotations": {ANNOTATION_RETRY: str(int(time.time() * 1000))}}}
    elif reads.is_terminal(phase):
        raise ApiError(409, "Conflict", f"Flow {namespace}/{name} is {phase}: a finished "
                       f"flow cannot be {verb}{'l' if verb == 'cancel' else ''}ed")
    elif verb == "cancel":
        patch = {"spec": {"cancel": True}}
    else:
        patch = {"spec": {"suspend": verb == "suspend"}}
    patched = await ctx.api.patch_flow(namespace, name, patch)
    if patched is None:
        raise no_such_flow(namespace, name)
    log.info('user "%s" asked to %s Flow %s/%s', caller.username, verb, namespace, name)
    return web.json_response(reads.flow_summary(patched, snapshot))


async def retry(request: web.Request) -> web.Response:
    return await _steer(request, "retry")


async def cancel(request: web.Request) -> web.Response:
    return await _steer(request, "cancel")


async def suspend(request: web.Request) -> web.Response:
    return await _steer(request, "suspend")


async def resume(request: web.Request) -> web.Response:
    return await _steer(request, "resume")


async def delete_flow(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    namespace, name = request.match_info["ns"], request.match_info["name"]
    caller = await authorized_caller(request, "delete", namespace)
    if not await ctx.api.remove_flow(namespace, name):
        raise no_such_flow(namespace, name)
    log.info('user "%s" deleted Flow %s/%s', caller.username, namespace, name)
    return web.json_response({"deleted": name})


async def web_view(request: web.Request) -> web.StreamResponse:
    """The web view's built files; any other path gets its index.html (the view routes)."""
    root = request.app[CONTEXT].web_dir.resolve()
    index = root / "index.html"
    wanted = (root / request.match_info.get("path", "")).resolve()
    if wanted != root and root in wanted.parents and wanted.is_file():
        return web.FileResponse(wanted)
    if index.is_file():
        return web.FileResponse(index)
    return web.Response(status=404, text=WEB_MISSING, content_type="text/plain")


def build_app(ctx: Context) -> web.Application:
    from kflow.server.events import follow  # the SSE route: its own module

    app = web.Application(middlewares=[errors_and_access_log])
    app[CONTEXT] = ctx
    flows = "/api/v1/namespaces/{ns}/flows"
    flow = flows + "/{name}"
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/whoami", whoami)
    app.router.add_get(flows, list_flows)
    app.router.add_get(flow, get_flow)
    app.router.add_delete(flow, delete_flow)
    app.router.add_get(flow + "/nodes", list_nodes)
    app.router.add_get(flow + "/nodes/{node}", get_node)
    app.router.add_get(flow + "/graph", get_graph)
    app.router.add_get(flow + "/logs", get_logs)
    app.router.add_get(flow + "/events", follow)
    for action, route in (("retry", retry), ("cancel", cancel), ("suspend", suspend),
                          ("resume", resume)):
        app.router.add_post(f"{flow}/{action}", route)
    app.router.add_get("/{path:(?!api/).*}", web_view)
    return app


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
