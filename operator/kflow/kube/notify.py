"""A Flow's end notification: one CloudEvents 1.0 JSON POSTed to the webhook `spec.notify` names.

Delivery is at least once. The event's id is the same on every try and after an operator
restart (the flow's uid, phase and finishedAt), so a receiver drops duplicates by id. Once the
receiver answers 2xx, `status.notification` records it (state Delivered and that id): the
Flow object, not Redis, since it outlives a Redis that lost its data. A restarted operator
sends the notification of a finished flow whose status has no record for that id. When every
try fails the record says Failed (not tried again after a restart) and a Warning Event names
the webhook's host and the error, never the URL, which may carry a token.

The envelope is built here by the spec (structured mode: the attributes and `data` in one
JSON object, content type application/cloudevents+json): it is nine fields, and the
`cloudevents` SDK would add a dependency (and its own HTTP conversion) for them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from kflow.api.models import API_VERSION
from kflow.api.states import TERMINAL_PHASES
from kflow.kube.events import EventPoster, FlowEvent
from kflow.kube.status import now_rfc3339
from kflow.settings import NotifySettings

log = logging.getLogger("kflow.kube.notify")

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
TYPE_PREFIX = "dev.kflow.flow."  # + succeeded, failed, cancelled
REASON_SENT = "NotificationSent"
REASON_FAILED = "NotificationFailed"
# Answers that no retry will change (the receiver refused this request itself).
_FINAL_STATUSES = frozenset(range(400, 500)) - {408, 425, 429}


class NotifyApi(Protocol):
    """The calls the notifier makes (kflow.kube.k8s.KubeApi has them)."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_flow_status(self, namespace: str, name: str,
                                status: dict[str, Any]) -> bool: ...


def event_id(uid: str, status: Mapping[str, Any]) -> str:
    """Stable for one ending of one Flow: the same on every try and after a restart; a flow
    retried and finished again gets a new one (its finishedAt moved on)."""
    return f"{uid}/{status.get('phase')}/{status.get('finishedAt') or ''}"


def cloud_event(*, namespace: str, name: str, uid: str,
                status: Mapping[str, Any]) -> dict[str, Any]:
    """The structured-mode CloudEvent of a finished flow, from its status."""
    phase = str(status.get("phase"))
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(uid, status),
        "source": f"/apis/{API_VERSION}/namespaces/{namespace}/flows/{name}",
        "type": TYPE_PREFIX + phase.lower(),
        # The source names the Flow; the subject tells apart two Flows of that name over time.
        "subject": uid,
        "time": status.get("finishedAt") or now_rfc3339(),
        "datacontenttype": "application/json",
        "data": {
            "namespace": namespace, "name": name, "uid": uid, "phase": phase,
            "progress": status.get("progress"), "total": status.get("total"),
            "counts": status.get("counts") or {},
            "startedAt": status.get("startedAt"), "finishedAt": status.get("finishedAt"),
            "duration": status.get("duration"),
            "firstFailures": list(status.get("firstFailures") or []),
        },
    }


class NotifyError(Exception):
    """One try failed; `final` when trying again cannot help. The text never holds the URL."""

    def __init__(self, text: str, *, final: bool = False) -> None:
        super().__init__(text)
        self.final = final


def webhook_host(url: str) -> str:
    """What messages may say of a URL: its host and port (never userinfo, path or query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


@dataclass
class _Watched:
    namespace: str
    name: str
    secret: str
    key: str
    sent: str | None = None  # the id delivered or given up by this process
    task: asyncio.Task[None] | None = None


class Notifier:
    """Sends each finished flow's notification once it is owed; one task per sending."""

    def __init__(self, api: NotifyApi, events: EventPoster, settings: NotifySettings) -> None:
        self.api = api
        self.events = events
        self.settings = settings
        self._flows: dict[str, _Watched] = {}
        self._session: aiohttp.ClientSession | None = None

    def watch(self, uid: str, namespace: str, name: str, notify: Mapping[str, Any] | None,
              status: Mapping[str, Any]) -> None:
        """A Flow admitted (created, or seen again after a restart): remember its webhook,
        and send the notification now if it finished and its status has no record of it."""
        ref = ((notify or {}).get("webhook") or {}).get("secretKeyRef")
        if not ref:
            self._flows.pop(uid, None)
            return
        watched = self._flows.get(uid)
        if watched is None:
            watched = self._flows[uid] = _Watched(namespace, name, ref["name"],
                                                  ref.get("key") or "url")
        record = status.get("notification") or {}
        if status.get("phase") in TERMINAL_PHASES and record.get("id") != event_id(uid, status):
            self.finished(uid, status)

    def finished(self, uid: str, status: Mapping[str, Any] | None) -> None:
        """The flow reached a terminal phase (`status` as just reported)."""
        watched = self._flows.get(uid)
        if watched is None or not status or status.get("phase") not in TERMINAL_PHASES:
            return
        event = cloud_event(namespace=watched.namespace, name=watched.name, uid=uid,
                            status=status)
        if watched.sent == event["id"]:
            return
        if watched.task is not None and not watched.task.done():
            watched.task.cancel()  # an older ending's tries: this one supersedes them
        watched.sent = event["id"]
        watched.task = asyncio.create_task(self._deliver(uid, watched, event),
                                           name=f"kflow-notify-{uid}")

    def forget(self, uid: str) -> None:
        """The Flow was deleted. A sending under way finishes (its Secret may still be
        there): the receiver hears of the ending either way."""
        self._flows.pop(uid, None)

    async def close(self) -> None:
        for watched in list(self._flows.values()):
            if watched.task is not None:
                watched.task.cancel()
        if self._session is not None:
            await self._session.close()

    async def _deliver(self, uid: str, watched: _Watched, event: dict[str, Any]) -> None:
        where, attempt, error = "?", 0, ""
        ref = f"{watched.namespace}/{watched.name}"
        for attempt in range(1, self.settings.attempts + 1):
            if attempt > 1:
                step = min(self.settings.backoff_cap,
                           self.settings.backoff_base * 2 ** (attempt - 2))
                await asyncio.sleep(step * random.uniform(0.5, 1.0))
            try:
                url = await self._url(watched)
                where = webhook_host(url)
                await self._post(url, event)
            except NotifyError as exc:
                error = str(exc)
                log.info("Flow %s: notification %s, try %d of %d failed: %s", ref,
                         event["type"], attempt, self.settings.attempts, error)
                if exc.final:
                    break
                continue
            log.info("Flow %s: notification %s delivered to %s (try %d)", ref, event["type"],
                     where, attempt)
            self.events.post(FlowEvent(uid, watched.namespace, watched.name, REASON_SENT,
                                       f"{event['type']} delivered to webhook host {where}",
                                       warning=False))
            await self._record(watched, event, "Delivered", attempt, None)
            return
        message = f"webhook host {where}: {error} (gave up after {attempt} tries)"
        log.warning("Flow %s: notification %s not delivered: %s", ref, event["type"], message)
        self.events.post(FlowEvent(uid, watched.namespace, watched.name, REASON_FAILED,
                                   f"{event['type']} not delivered to {message}", warning=True))
        await self._record(watched, event, "Failed", attempt, message)

    async def _record(self, watched: _Watched, event: dict[str, Any], state: str,
                      attempts: int, message: str | None) -> None:
        record: dict[str, Any] = {"id": event["id"], "state": state, "attempts": attempts,
                                  "time": now_rfc3339(), "message": message}
        try:
            await self.api.patch_flow_status(watched.namespace, watched.name,
                                             {"notification": record})
        except Exception as exc:
            # Unrecorded, a restarted operator sends it again: at least once, never lost.
            log.warning("Flow %s/%s: could not record the notification as %s: %s",
                        watched.namespace, watched.name, state, exc)

    async def _url(self, watched: _Watched) -> str:
        where = (f"Secret {watched.namespace}/{watched.secret} "
                 "(spec.notify.webhook.secretKeyRef)")
        try:
            secret = await self.api.read_secret(watched.namespace, watched.secret)
        except Exception as exc:
            status = getattr(exc, "status", None)  # an ApiException's text holds its headers
            if status == 403:
                raise NotifyError(f"the operator may not read {where}: grant its service "
                                  f"account get on secrets in namespace {watched.namespace}"
                                  ) from None
            reason = f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else exc
            raise NotifyError(f"could not read {where}: {reason}") from None
        if secret is None:
            raise NotifyError(f"{where} does not exist; create it with the webhook URL under "
                              f"key {watched.key!r}")
        raw = (secret.get("data") or {}).get(watched.key)
        if raw is None:
            raise NotifyError(f"{where} has no key {watched.key!r}; add the webhook URL "
                              "under it or set secretKeyRef.key")
        try:
            url = base64.b64decode(raw).decode().strip()
        except ValueError:
            raise NotifyError(f"{where} key {watched.key!r} is not UTF-8 text") from None
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise NotifyError(f"{where} key {watched.key!r} does not hold an http(s) URL")
        return url

    async def _post(self, url: str, event: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds))
        body = json.dumps(event, separators=(",", ":")).encode()
        try:
            async with self._session.post(url, data=body,
                                          headers={"Content-Type": CONTENT_TYPE}) as answer:
                if 200 <= answer.status < 300:
                    return
                raise NotifyError(f"HTTP {answer.status} {answer.reason or ''}".strip(),
                                  final=answer.status in _FINAL_STATUSES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = _redact(str(exc) or type(exc).__name__, url)
            raise NotifyError(f"{type(exc).__name__}: {text}") from None


def _redact(text: str, url: str) -> str:
    """Some client errors quote the URL, whose path, query or userinfo may hold a token."""
    parts = urlsplit(url)
    secrets = [url, parts.query, parts.password, parts.username,
               parts.path + (f"?{parts.query}" if parts.query else "")]
    for secret in sorted((s for s in secrets if s and len(s) > 1), key=len, reverse=True):
        text = text.replace(secret, "…")
    return text
