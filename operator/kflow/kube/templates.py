"""FlowTemplates in the operator: each gets a Valid condition (with Ready and Stalled), and a
change of one admits again the Flows that were waiting for it (missing or invalid when they
were admitted). A Flow already recorded never reads its template again (kflow.kube.flows)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from kflow.api.errors import SpecError, error_lines
from kflow.api.manifests import parse_manifest
from kflow.api.models import MAX_CONDITION_MESSAGE, FlowTemplate
from kflow.graph.templates import check_template
from kflow.kube.events import EventPoster
from kflow.kube.flows import FlowLifecycle
from kflow.kube.status import now_rfc3339

log = logging.getLogger("kflow.kube.templates")


class TemplateApi(Protocol):
    """The calls TemplateControl makes (kflow.kube.k8s.KubeApi has them)."""

    async def patch_flowtemplate_status(self, namespace: str, name: str,
                                        status: dict[str, Any]) -> bool: ...


def verdict(body: Mapping[str, Any]) -> str | None:
    """The problems of a FlowTemplate, as `kflow lint` prints them; None when it is valid."""
    try:
        template = parse_manifest(body)
        assert isinstance(template, FlowTemplate)
        check_template(template)
    except SpecError as exc:
        return "\n".join(error_lines(exc))[:MAX_CONDITION_MESSAGE]
    except ValidationError as exc:  # pragma: no cover - parse_manifest turns these into SpecError
        return str(exc)[:MAX_CONDITION_MESSAGE]
    return None


def template_status(body: Mapping[str, Any], problems: str | None) -> dict[str, Any]:
    """Valid, Ready and Stalled of a FlowTemplate, and the generation they are about."""
    meta = body.get("metadata") or {}
    old = {c.get("type"): c for c in (body.get("status") or {}).get("conditions") or []}
    valid = problems is None

    def condition(ctype: str, status: bool, reason: str, message: str) -> dict[str, Any]:
        text = "True" if status else "False"
        previous = old.get(ctype) or {}
        since = previous.get("lastTransitionTime") if previous.get("status") == text \
            else now_rfc3339()
        return {"type": ctype, "status": text, "reason": reason, "message": message,
                "lastTransitionTime": since, "observedGeneration": meta.get("generation")}

    reason = "Compiled" if valid else "InvalidSpec"
    message = "the template compiles; Flows may refer to it" if valid else problems or ""
    return {
        "observedGeneration": meta.get("generation"),
        "conditions": [condition("Valid", valid, reason, message),
                       condition("Ready", valid, reason, message),
                       condition("Stalled", not valid, reason, "" if valid else message)],
    }


class TemplateControl:
    """One method per FlowTemplate event."""

    def __init__(self, api: TemplateApi, events: EventPoster, flows: FlowLifecycle) -> None:
        self.api = api
        self.events = events
        self.flows = flows

    async def seen(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        problems = verdict(body)
        status = template_status(body, problems)
        current = body.get("status") or {}
        if (current.get("observedGeneration"), current.get("conditions")) != \
                (status["observedGeneration"], status["conditions"]):
            await self.api.patch_flowtemplate_status(namespace, name, status)
            if problems is not None:
                self.events.post_on(_involved(body), reason="InvalidSpec", message=problems,
                                    warning=True)
        if problems is not None:
            return
        for flow in self.flows.awaiting(namespace, name):
            log.info("FlowTemplate %s/%s is valid: admitting Flow %s again", namespace, name,
                     flow["metadata"]["name"])
            await self.flows.admit(flow)


def _involved(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": body.get("apiVersion"), "kind": "FlowTemplate", "name": meta["name"],
            "namespace": meta["namespace"], "uid": meta.get("uid")}
