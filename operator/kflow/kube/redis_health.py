"""The operator's checks of its Redis at start: refuse an evicting one, warn about no persistence.

The decisions are the store's (kflow.store.durability); this module reaches Redis for them, and
reports a missing persistence where a person sees it: the log, the
`kflow_redis_persistence_enabled` gauge, and a Warning Event on the operator's own Deployment
when it runs in a pod (found through the downward API's pod name and the pod's owners).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from kflow.kube.events import EventPoster
from kflow.kube.metrics import Metrics
from kflow.settings import OperatorPodSettings
from kflow.store import durability
from kflow.store.connect import RedisTarget
from kflow.store.durability import (
    Durability,
    Persistence,
    eviction_refusal,
    persistence_of,
    persistence_warning,
)

log = logging.getLogger("kflow.kube.redis")

# The reason of the Warning Event on the operator's Deployment (`kubectl describe deployment`).
REASON_NO_PERSISTENCE = "RedisPersistenceOff"


class OwnerApi(Protocol):
    """What finding the operator's Deployment needs (kflow.kube.k8s.KubeApi has it)."""

    async def read_object(self, kind: str, namespace: str,
                          name: str) -> dict[str, Any] | None: ...


async def read_when_reachable(target: RedisTarget) -> list[Durability]:
    """Every server's durability, waiting (with a log line) while Redis cannot be reached, as
    the operator always has at start."""
    def waiting(error: str, seconds: float) -> None:
        log.warning("waiting for Redis (%s): %s; retrying in %.1f s", _where(target.url), error,
                    seconds)

    return await durability.read_when_reachable(target, waiting=waiting)


def refusal(readings: list[Durability]) -> str | None:
    """The error that stops the operator, or None: one line per evicting server."""
    reasons = [text for text in map(eviction_refusal, readings) if text]
    return "\n".join(reasons) if reasons else None


def persistence_enabled(readings: list[Durability]) -> bool | None:
    """False if any server keeps nothing, None if one is unknown (and none off), else True."""
    found = {persistence_of(reading) for reading in readings}
    if Persistence.OFF in found:
        return False
    if Persistence.UNKNOWN in found or not found:
        return None
    return True


async def report_persistence(readings: list[Durability], *, metrics: Metrics,
                             events: EventPoster, api: OwnerApi,
                             pod: OperatorPodSettings) -> str | None:
    """Log, export and (in a pod) post an Event about servers without persistence.

    Returns the warning text, None when every server persists. Posting waits for the Event, so
    a caller knows it was attempted; a failed post is logged, never raised.
    """
    enabled = persistence_enabled(readings)
    metrics.redis_persistence(enabled)
    warnings = [text for text in map(persistence_warning, readings) if text]
    if not warnings:
        return None
    text = "\n".join(warnings)
    for line in warnings:
        log.warning("%s", line)
    if enabled is None:
        return text  # unknown is worth a log line, not an Event
    involved = await operator_deployment(api, pod)
    if involved is not None:
        await events.post_on(involved, reason=REASON_NO_PERSISTENCE, message=text, warning=True)
    return text


async def operator_deployment(api: OwnerApi, pod: OperatorPodSettings) -> dict[str, Any] | None:
    """The involvedObject of the operator's own Deployment, or None when it cannot be known.

    KFLOW_OPERATOR_DEPLOYMENT names it directly; else the pod (KFLOW_POD_NAME) leads to its
    controlling ReplicaSet, and that to its controlling Deployment. Without a namespace (a
    process on a host) there is none.
    """
    namespace = pod.pod_namespace
    if not namespace:
        return None
    try:
        name = pod.deployment or await _owning_deployment(api, namespace, pod.pod_name)
        if name is None:
            return None
        found = await api.read_object("Deployment", namespace, name)
    except Exception as exc:  # RBAC or API trouble: the log and metric still say it
        log.warning("could not find the operator's Deployment for the Redis warning: %s", exc)
        return None
    if found is None:
        log.warning("the operator's Deployment %s/%s does not exist", namespace, name)
        return None
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
            "namespace": namespace, "uid": found["metadata"]["uid"]}


async def _owning_deployment(api: OwnerApi, namespace: str, pod_name: str | None) -> str | None:
    if not pod_name:
        return None
    pod = await api.read_object("Pod", namespace, pod_name)
    replica_set = _controller(pod, "ReplicaSet")
    if replica_set is None:
        return None
    return _controller(await api.read_object("ReplicaSet", namespace, replica_set), "Deployment")


def _controller(body: dict[str, Any] | None, kind: str) -> str | None:
    """The name of `body`'s controlling owner of `kind`, if it has one."""
    owners = ((body or {}).get("metadata") or {}).get("ownerReferences") or []
    for owner in owners:
        if owner.get("kind") == kind and owner.get("controller", True):
            return str(owner["name"])
    return None


def _where(url: str) -> str:
    """The URL without its credentials, for a log line."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
