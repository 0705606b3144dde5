"""`kflow server` as a host process (the server kit) on a real Redis and the local cluster's API
server: paging a large seeded flow over HTTP, live events, bad input, and Redis down -> 503."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kflow.api.ids import FlowId, QueueId
from kflow.cli.redis_server import free_port
from kflow.devkit.operator import Kube
from kflow.devkit.redis import RedisServer
from kflow.devkit.server import SEED_QUEUE, HostServer, seed_flow, service_account_token
from kflow.engine import Engine
from kflow.store.connect import connect

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

NODES = 5_000


class Client:
    def __init__(self, base: str, token: str | None) -> None:
        self.base, self.token = base, token

    def get(self, path: str, *, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path, headers={**({"X-Kflow-Token": self.token} if self.token else {}),
                                       **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                body = answer.read().decode()
                status = answer.status
        except urllib.error.HTTPError as error:
            body, status = error.read().decode(), error.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body


@pytest.fixture(scope="module")
def seeded(kube: Kube, redis_srv: RedisServer) -> Iterator[tuple[Client, str, str]]:
    """A seeded flow of NODES nodes in a namespace no operator watches, a host server on the
    session's Redis, and a client with a `view` token there: (client, namespace, flow uid)."""
    namespace = f"kflow-api-{uuid.uuid4().hex[:6]}"
    seed = seed_flow(redis_srv.url, namespace, "big", NODES, 400, kube=kube)
    token = service_account_token(kube, namespace, "viewer", "view", namespace)
    try:
        with HostServer(redis_srv.url) as server:
            yield Client(server.url, token), namespace, seed["uid"]
    finally:
        kube("delete", "namespace", namespace, "--wait=false", check=False)


def test_paging_over_http_sees_every_node_once_or_more(seeded: tuple[Client, str, str]) -> None:
    client, namespace, _ = seeded
    base = f"/api/v1/namespaces/{namespace}/flows/big/nodes?limit=300"
    names: set[str] = set()
    cursor, pages = "", 0
    while True:
        status, page = client.get(base + (f"&continue={cursor}" if cursor else ""))
        assert status == 200, page
        assert len(page["items"]) < NODES // 2
        names.update(n["name"] for n in page["items"])
        pages += 1
        if page["continue"] is None:
            break
        cursor = page["continue"]
    assert len(names) == NODES and pages > 5
    status, failed = client.get(f"/api/v1/namespaces/{namespace}/flows/big/nodes"
                                "?state=failed&limit=5000")
    assert status == 200
    assert failed["items"] and {n["state"] for n in failed["items"]} == {"failed"}
    assert failed["items"][0]["error"].startswith("seeded failure of")


def test_bad_input_is_400_and_missing_things_404(seeded: tuple[Client, str, str]) -> None:
    client, namespace, _ = seeded
    flow = f"/api/v1/namespaces/{namespace}/flows/big"
    for path, word in ((f"{flow}/nodes?limit=0", "limit"), (f"{flow}/nodes?limit=x", "limit"),
                       (f"{flow}/nodes?state=done", "state"),
                       (f"{flow}/nodes?continue=abc", "continue"),
                       (f"{flow}/graph?collapse=-1", "collapse")):
        status, body = client.get(path)
        assert (status, body["reason"]) == (400, "BadRequest"), path
        assert word in body["error"], body
    status, body = client.get(f"/api/v1/namespaces/{namespace}/flows/nope")
    assert status == 404 and "nope" in body["error"]
    status, body = client.get(f"{flow}/nodes/nope")
    assert status == 404 and "nope" in body["error"]


def test_events_stream_node_changes_as_they_happen(seeded: tuple[Client, str, str],
                                                   redis_srv: RedisServer) -> None:
    client, namespace, uid = seeded
    lines: list[str] = []
    started = threading.Event()

    def follow() -> None:
        request = urllib.request.Request(
            f"{client.base}/api/v1/namespaces/{namespace}/flows/big/events",
            headers={"X-Kflow-Token": client.token or ""})
        with urllib.request.urlopen(request, timeout=60) as answer:
            for raw in answer:
                lines.append(raw.decode().rstrip("\n"))
                started.set()
                if len(lines) > 1 and lines[-2] == "event: node":  # its data line read
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert started.wait(30), "no first event"

    async def finish_one() -> str:
        redis = await connect(redis_srv.url)
        try:
            engine = Engine(redis)
            [attempt] = await engine.take(QueueId.of(namespace, SEED_QUEUE), 1, owner="test")
            await engine.complete_batch([(FlowId.of(namespace, uid), attempt.node,
                                          attempt.token, "done")])
            return attempt.node
        finally:
            await redis.aclose()

    finished = asyncio.run(finish_one())
    reader.join(30)
    assert lines[0].startswith("id: ") and lines[1] == "event: flow"
    nodes = [json.loads(line[6:]) for i, line in enumerate(lines)
             if line.startswith("data: ") and lines[i - 1] == "event: node"]
    assert nodes and nodes[0]["name"] == finished, lines
    assert nodes[0]["state"] in ("active", "completed")


def test_redis_down_is_503_with_the_cause(kube: Kube, seeded: tuple[Client, str, str]) -> None:
    _, namespace, _ = seeded
    with HostServer(f"redis://127.0.0.1:{free_port()}/0",
                    env={"KFLOW_REDIS_RETRIES": "0", "KFLOW_REDIS_CONNECT_TIMEOUT": "1"}) as down:
        client = Client(down.url, seeded[0].token)
        status, body = client.get(f"/api/v1/namespaces/{namespace}/flows/big/nodes")
    assert status == 503 and body["reason"] == "Unavailable", body
    assert "Redis is unreachable" in body["error"]


def test_a_direct_caller_may_send_authorization_bearer(seeded: tuple[Client, str, str]) -> None:
    client, namespace, _ = seeded
    direct = Client(client.base, None)

    status, me = direct.get("/api/v1/whoami", headers={"Authorization": f"Bearer {client.token}"})
    assert status == 200 and me["username"].endswith(":viewer"), me
    status, body = direct.get(f"/api/v1/namespaces/{namespace}/flows",
                              headers={"Authorization": "Basic abc"})
    assert status == 401, body


def test_last_event_id_resumes_after_that_event(seeded: tuple[Client, str, str],
                                                redis_srv: RedisServer) -> None:
    client, namespace, uid = seeded

    async def events() -> list[dict[str, str]]:
        redis = await connect(redis_srv.url)
        try:
            return await Engine(redis).events(FlowId.of(namespace, uid), 100_000)
        finally:
            await redis.aclose()

    history = asyncio.run(events())
    node_events = [e for e in history if e.get("node")]
    before_last = history[history.index(node_events[-1]) - 1]["id"]
    request = urllib.request.Request(
        f"{client.base}/api/v1/namespaces/{namespace}/flows/big/events",
        headers={"X-Kflow-Token": client.token or "", "Last-Event-ID": before_last})
    lines: list[str] = []
    with urllib.request.urlopen(request, timeout=60) as answer:
        for raw in answer:
            lines.append(raw.decode().rstrip("\n"))
            if len(lines) > 1 and lines[-2] == "event: node":
                break
    # The stream picks up right after the given id: the latest node event comes again.
    assert f"id: {node_events[-1]['id']}" in lines, lines
    assert json.loads(lines[-1][6:])["name"] == node_events[-1]["node"]
