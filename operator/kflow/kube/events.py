"""Kubernetes Events on Flows and on the operator's own Deployment, posted from one place in the
background (never delaying work)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from kflow.api.models import API_VERSION

log = logging.getLogger("kflow.kube.events")

COMPONENT = "kflow-operator"  # the Events' source, as `kubectl get events` shows it


@dataclass(frozen=True)
class FlowEvent:
    """Something worth a Kubernetes Event on a Flow (a node failed for good, the flow ended)."""

    flow_uid: str
    namespace: str
    flow_name: str
    reason: str
    message: str
    warning: bool


class EventApi(Protocol):
    """The one call the poster makes (kflow.kube.k8s.KubeApi has it)."""

    async def post_event(self, involved: dict[str, Any], *, type: str, reason: str,
                         message: str, component: str, instance: str) -> None: ...


class EventPoster:
    """Posts Events in background tasks; a failed post is logged, never raised (an Event is a
    courtesy: the Flow's status says it too). The API call bounds the message's length."""

    def __init__(self, api: EventApi, *, identity: str) -> None:
        self._api = api
        self._identity = identity
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, event: FlowEvent) -> None:
        involved = {"name": event.flow_name, "namespace": event.namespace, "uid": event.flow_uid,
                    "kind": "Flow", "apiVersion": API_VERSION}
        self.post_on(involved, reason=event.reason, message=event.message, warning=event.warning)

    def post_on(self, involved: dict[str, Any], *, reason: str, message: str,
                warning: bool) -> asyncio.Task[None]:
        """Post an Event on any object (`involved`: apiVersion, kind, name, namespace, uid);
        the returned task never raises, so a caller may await it or leave it."""

        async def post() -> None:
            try:
                await self._api.post_event(
                    involved, type="Warning" if warning else "Normal", reason=reason,
                    message=message, component=COMPONENT, instance=self._identity)
            except Exception as exc:
                log.warning("could not post %s Event on %s %s/%s: %s", reason,
                            involved.get("kind"), involved.get("namespace"),
                            involved.get("name"), exc)

        task = asyncio.create_task(post())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
