"""A flow's live updates as server-sent events, read from the flow's event stream in Redis."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from aiohttp import web

from kflow.engine import Engine, FlowNotFound
from kflow.server import reads
from kflow.server.app import (
    CONTEXT,
    ApiError,
    authorized_caller,
    dumps,
    flow_id_of,
    flow_or_404,
)

log = logging.getLogger("kflow.server")

STREAM_ID = re.compile(r"^\d+-\d+$")
EVENTS_PER_READ = 500


def sse(event: str | None, data: Any, event_id: str | None = None) -> bytes:
    lines = []
    if event_id:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append(f"data: {dumps(data)}")
    return ("\n".join(lines) + "\n\n").encode()


async def follow(request: web.Request) -> web.StreamResponse:
    """GET .../flows/{name}/events: `flow` summaries, `node` changes, `end`, keep-alives."""
    ctx = request.app[CONTEXT]
    namespace, name = request.match_info["ns"], request.match_info["name"]
    caller = await authorized_caller(request, "get", namespace)
    resume_from = request.headers.get("Last-Event-ID", "").strip() or None
    if resume_from is not None and not STREAM_ID.match(resume_from):
        raise ApiError(400, "BadRequest", f"Last-Event-ID {resume_from!r} is not an event id "
                       "this stream sent (<ms>-<seq>)")
    flow = await flow_or_404(ctx, namespace, name)
    flow_id = flow_id_of(flow)
    engine = await ctx.redis.engine()
    streams = await ctx.redis.stream_engine()
    assert ctx.stream_slots is not None
    if ctx.stream_slots.locked():
        raise ApiError(503, "Unavailable", f"the server follows {ctx.settings.streams} event "
                       "streams already (KFLOW_SERVER_STREAMS); try again shortly")
    async with ctx.stream_slots:
        after = resume_from or await engine.events_tail(flow_id)
        summary = reads.flow_summary(flow, await engine.snapshot(flow_id))
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        log.info('user "%s" follows Flow %s/%s from event %s', caller.username, namespace,
                 name, after)
        # The caller going away, or the flow, ends the stream.
        with contextlib.suppress(ConnectionResetError, FlowNotFound):
            await _pump(response, engine, streams, flow, after, summary,
                        ctx.settings.keepalive_seconds)
        return response


async def _pump(response: web.StreamResponse, engine: Engine, streams: Engine,
                flow: dict[str, Any], after: str, summary: dict[str, Any],
                keepalive: float) -> None:
    flow_id = flow_id_of(flow)
    await response.write(sse("flow", summary, after))
    while not reads.is_terminal(summary["phase"]):
        events = await streams.follow_events(flow_id, after, block_ms=int(keepalive * 1000),
                                             count=EVENTS_PER_READ)
        if not events:
            await response.write(b": keep-alive\n\n")
            continue
        after = events[-1]["id"]
        last_of: dict[str, str] = {}
        for event in events:
            if event.get("node"):
                last_of[event["node"]] = event["id"]
        names = list(last_of)
        rows = await engine.node_states(flow_id, names) if names else []
        for node, row in zip(names, rows, strict=True):
            if row is not None:
                await response.write(sse("node", reads.node_event(row), last_of[node]))
        fresh = reads.flow_summary(flow, await engine.snapshot(flow_id))
        if fresh != summary:
            summary = fresh
            await response.write(sse("flow", summary, after))
    await response.write(sse("end", {"phase": summary["phase"]}, after))
