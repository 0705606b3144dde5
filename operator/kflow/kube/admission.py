"""The validating admission webhook: `kubectl apply` of a Flow or Queue gets `kflow lint`'s verdict.

The handlers are thin: they hand the object to `kflow.graph.check_manifest`, the function lint
and the operator's Valid condition use, and refuse the request with its lines. Registered only
when the webhook is enabled (kopf refuses to start with admission handlers but no server).

What is checked, and why no more:
- Flow CREATE. A Flow's spec cannot change after creation except suspend and cancel (CEL rules
  in the CRD, which run before any webhook), so an UPDATE is not sent here: that spares every
  metadata patch the operator makes (finalizers, kopf's annotations) a round trip, and cannot
  block the deletion of a Flow that was created while the webhook was off.
- Queue CREATE and UPDATE, since a Queue's spec may change; an UPDATE that leaves the spec as
  it was (a metadata patch) is let through unchecked, for the same reasons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf

from kflow.api.errors import SpecError, error_lines
from kflow.api.models import API_VERSION, GROUP, VERSION
from kflow.graph import check_manifest
from kflow.settings import WebhookSettings

FLOW_WEBHOOK = "validate-flow"  # kopf handler ids, also the URL paths the webhook is served at
QUEUE_WEBHOOK = "validate-queue"
# kopf answers with this code when a handler raises AdmissionError; kubectl shows the message.
UNPROCESSABLE = 422


def refusal(kind: str, body: Mapping[str, Any], namespace: str | None) -> str | None:
    """The message `kubectl apply` shows for this object, or None when kflow accepts it."""
    meta = body.get("metadata") or {}
    document = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": kind,
        "metadata": {
            key: value
            for key, value in (("name", meta.get("name")),
                               ("generateName", meta.get("generateName")),
                               ("namespace", meta.get("namespace") or namespace))
            if value
        },
        "spec": body.get("spec"),
    }
    try:
        check_manifest(document)
    except SpecError as exc:
        return "\n".join(error_lines(exc))
    return None


async def _judge(kind: str, body: kopf.Body, namespace: str | None) -> None:
    # A large flow takes a while to compile: off the event loop, which serves the watches.
    message = await asyncio.to_thread(refusal, kind, body, namespace)
    if message is not None:
        raise kopf.AdmissionError(message, code=UNPROCESSABLE)


async def validate_flow(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    await _judge("Flow", body, namespace)


async def validate_queue(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    old, new = kwargs.get("old"), kwargs.get("new")
    if kwargs.get("operation") == "UPDATE" and old is not None and new is not None \
            and old.get("spec") == new.get("spec"):
        return
    await _judge("Queue", body, namespace)


def register(config: WebhookSettings, namespaces: list[str]) -> None:
    """Register the webhook handlers and the startup step that gives kopf its server.

    `namespaces`: the ones the operator serves (all when empty).
    """
    if not (config.cert_file and config.key_file):
        raise ValueError(
            "KFLOW_WEBHOOK_ENABLED is true but KFLOW_WEBHOOK_CERT_FILE and "
            "KFLOW_WEBHOOK_KEY_FILE are not both set; the API server only calls webhooks over "
            "HTTPS (the Helm chart mounts a generated certificate)")
    watched = frozenset(namespaces)

    def in_watched_namespace(namespace: str | None, **_: Any) -> bool:
        # A managed configuration has no namespace selector: objects in namespaces this
        # operator does not serve are let through, not judged by it.
        return not watched or namespace in watched

    ignore = config.failure_policy == "Ignore"
    kopf.on.validate(GROUP, VERSION, "flows", id=FLOW_WEBHOOK, operations=["CREATE"],
                     ignore_failures=ignore, when=in_watched_namespace)(validate_flow)
    kopf.on.validate(GROUP, VERSION, "queues", id=QUEUE_WEBHOOK,
                     operations=["CREATE", "UPDATE"], ignore_failures=ignore,
                     when=in_watched_namespace)(validate_queue)

    @kopf.on.startup()
    async def serve_admission(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = kopf.WebhookServer(
            addr=config.listen,
            port=config.port,
            host=config.host,
            certfile=config.cert_file,
            pkeyfile=config.key_file,
            cafile=config.ca_file,
        )
        if config.managed:
            settings.admission.managed = config.configuration_name
