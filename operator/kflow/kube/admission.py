"""The validating admission webhook: `kubectl apply` of a Flow or Queue gets `kflow lint`'s verdict.

The handlers are thin: they hand the object to `kflow.graph.check_manifest`, the function lint
and the operator's Valid condition use, and refuse the request with its lines. Registered only
when the webhook is enabled (kopf refuses to start with admission handlers but no server).

What is checked, and why no more:
- Flow CREATE and UPDATE. A Flow made from a FlowTemplate gets its parameters checked against
  the template when it exists (one applied before its template waits for it instead). Under
  `changePolicy` Queue or Restart a changed spec is judged before it starts a new run; an
  UPDATE that leaves the run-shaping fields as they were (metadata patches, suspend, cancel)
  is let through unchecked, so no patch the operator makes is refused, and the deletion of a
  Flow created while the webhook was off is never blocked.
- Queue CREATE and UPDATE, since a Queue's spec may change; an UPDATE that leaves the spec as
  it was (a metadata patch) is let through unchecked, for the same reasons. A Queue's pod
  template is also judged by the operator's pod policy (kflow.kube.policy), with the lines
  of the Queue's Valid condition; the condition stays the backstop, since the policy may
  change after a Queue was admitted.
- CronFlow CREATE and UPDATE: its schedule, time zone and the Flow it starts
  (kflow.kube.cronflows.judge, whose lines its Stalled condition carries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from kflow.api.errors import SpecError, error_lines
from kflow.api.models import (
    API_VERSION,
    GROUP,
    RUN_FIELDS,
    VERSION,
    FlowTemplate,
    ObjectMeta,
    object_ref,
)
from kflow.graph import check_manifest
from kflow.kube import cronflows, policy
from kflow.settings import PodPolicySettings, WebhookSettings

FLOW_WEBHOOK = "validate-flow"  # kopf handler ids, also the URL paths the webhook is served at
QUEUE_WEBHOOK = "validate-queue"
CRONFLOW_WEBHOOK = "validate-cronflow"
# kopf answers with this code when a handler raises AdmissionError; kubectl shows the message.
UNPROCESSABLE = 422


def refusal(kind: str, body: Mapping[str, Any], namespace: str | None,
            pod_policy: PodPolicySettings | None = None,
            template: FlowTemplate | None = None) -> str | None:
    """The message `kubectl apply` shows for this object, or None when kflow accepts it.

    `pod_policy`: a Queue's pod template is judged by it too (the operator's Valid condition
    gives the same lines); `kflow lint` knows no policy and passes none. `template`: the
    FlowTemplate a Flow's templateRef names, when it exists (its parameters are checked).
    """
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
        check_manifest(document, template=template)
    except SpecError as exc:
        return "\n".join(error_lines(exc))
    if kind == "Queue" and pod_policy is not None:
        spec = document["spec"] if isinstance(document["spec"], Mapping) else {}
        broken = policy.violations(spec.get("template"), pod_policy)
        if broken:
            where = object_ref("Queue", ObjectMeta.model_validate(document["metadata"]))
            return "\n".join(f"{where}: {violation}" for violation in broken)
    return None


async def _judge(kind: str, body: kopf.Body, namespace: str | None,
                 pod_policy: PodPolicySettings | None = None,
                 template: FlowTemplate | None = None) -> None:
    # A large flow takes a while to compile: off the event loop, which serves the watches.
    message = await asyncio.to_thread(refusal, kind, body, namespace, pod_policy, template)
    if message is not None:
        raise kopf.AdmissionError(message, code=UNPROCESSABLE)


def _run_fields(spec: Any) -> dict[str, Any]:
    spec = spec if isinstance(spec, Mapping) else {}
    return {key: spec.get(key) for key in RUN_FIELDS}


async def validate_flow(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    old, new = kwargs.get("old"), kwargs.get("new")
    if kwargs.get("operation") == "UPDATE" and old is not None and new is not None \
            and _run_fields(old.get("spec")) == _run_fields(new.get("spec")):
        return  # metadata, status-less patches, suspend, cancel: nothing to compile
    await _judge("Flow", body, namespace,
                 template=await _template(body, namespace, kwargs.get("memo")))


async def _template(body: kopf.Body, namespace: str | None, memo: Any) -> FlowTemplate | None:
    """The FlowTemplate a Flow names, if it exists and parses (its own problems are reported
    on it, and the Flow then waits with Valid=False); None otherwise: a Flow may be applied
    before its template (a GitOps sync applies both in one go)."""
    spec = body.get("spec")
    reference = spec.get("templateRef") if isinstance(spec, Mapping) else None
    runtime = getattr(memo, "runtime", None)
    if not isinstance(reference, Mapping) or not isinstance(reference.get("name"), str) \
            or runtime is None:
        return None
    found = await runtime.api.read_flowtemplate(body.get("metadata", {}).get("namespace")
                                                or namespace, reference["name"])
    try:
        return None if found is None else FlowTemplate.model_validate(found)
    except ValidationError:
        return None


def queue_validator(pod_policy: PodPolicySettings) -> Callable[..., Awaitable[None]]:
    """The Queue handler, judging templates by the operator's pod policy."""

    async def validate_queue(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
        old, new = kwargs.get("old"), kwargs.get("new")
        if kwargs.get("operation") == "UPDATE" and old is not None and new is not None \
                and old.get("spec") == new.get("spec"):
            return
        await _judge("Queue", body, namespace, pod_policy)

    return validate_queue


async def validate_cronflow(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    """A CronFlow's schedule, time zone and Flow, with the lines of its Stalled condition
    (kflow.kube.cronflows.judge); an UPDATE that leaves the spec as it was is let through."""
    old, new = kwargs.get("old"), kwargs.get("new")
    if kwargs.get("operation") == "UPDATE" and old is not None and new is not None \
            and old.get("spec") == new.get("spec"):
        return
    meta = dict(body.get("metadata") or {})
    meta["namespace"] = meta.get("namespace") or namespace
    problem, _ = await asyncio.to_thread(
        cronflows.judge, {"apiVersion": body.get("apiVersion"), "metadata": meta,
                          "spec": body.get("spec")})
    if problem is not None:
        raise kopf.AdmissionError(problem[1], code=UNPROCESSABLE)


def register(config: WebhookSettings, namespaces: list[str],
             pod_policy: PodPolicySettings) -> None:
    """Register the webhook handlers and the startup step that gives kopf its server.

    `namespaces`: the ones the operator serves (all when empty); `pod_policy`: what a Queue's
    pod template may set.
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
    kopf.on.validate(GROUP, VERSION, "flows", id=FLOW_WEBHOOK,
                     operations=["CREATE", "UPDATE"], ignore_failures=ignore,
                     when=in_watched_namespace)(validate_flow)
    kopf.on.validate(GROUP, VERSION, "queues", id=QUEUE_WEBHOOK,
                     operations=["CREATE", "UPDATE"], ignore_failures=ignore,
                     when=in_watched_namespace)(queue_validator(pod_policy))
    kopf.on.validate(GROUP, VERSION, "cronflows", id=CRONFLOW_WEBHOOK,
                     operations=["CREATE", "UPDATE"], ignore_failures=ignore,
                     when=in_watched_namespace)(validate_cronflow)

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
