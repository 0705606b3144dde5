"""kopf handlers: each unpacks one Kubernetes event and calls one method of the runtime's parts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kflow.api.cron import LABEL_CRONFLOW
from kflow.api.models import ANNOTATION_RETRY, API_VERSION, GROUP, VERSION
from kflow.kube.jobs import LABEL_FLOW_UID
from kflow.kube.runtime import Runtime
from kflow.kube.tenants import LABEL_MANAGED_BY, MANAGED_BY
from kflow.settings import get_settings

log = logging.getLogger(__name__)

KOPF_PREFIX = "kopf.kflow.dev"
DIFFBASE_KEY = "last-handled-configuration"


def needs_scanning(namespaces: list[str]) -> bool:
    """Whether kopf must watch namespaces and CRDs: when it serves every namespace, or
    namespaces matched by a pattern (kopf's globs and negations)."""
    return not namespaces or any(c in n for n in namespaces for c in "*?[!")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = get_settings()
    # Per-node state lives in Redis; kopf keeps its own bookkeeping in annotations, so the
    # Flow's status holds only what the CRD schema describes. Their prefix must differ from
    # kflow.dev: kopf ignores every annotation under its storage prefix, kflow.dev/retry too.
    settings.persistence.finalizer = "kflow.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    # kopf compares each Flow with a copy it keeps in an annotation (256 KiB for all of
    # them). The nodes cannot change (a CEL rule) and no handler watches them, so the copy
    # leaves them out: a Flow created with `kubectl create` up to etcd's limit still gets
    # its suspend, cancel and retry handled.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key=DIFFBASE_KEY,
        ignored_fields=["spec.nodes", "spec.defaults"])
    settings.posting.level = logging.INFO
    settings.batching.worker_limit = 256
    settings.peering.lifetime = config.peering.lifetime
    settings.watching.server_timeout = 300
    # No API call waits on a dead connection: kopf's own calls give up after these (kflow's
    # calls: kflow.kube.k8s.API_TIMEOUT_S), a watch a minute after the server should have
    # ended it.
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.watching.connect_timeout = 10
    settings.watching.client_timeout = 360
    # Serving listed namespaces by name, kopf needs no cluster-wide watch of namespaces or
    # CRDs; without this it keeps retrying them under namespace RBAC (rbac.scope=namespace)
    # for about a minute before it starts, and logs every refusal after.
    settings.scanning.disabled = not needs_scanning(config.watching.namespaces)
    runtime = await Runtime.from_settings(config)
    runtime.start()
    memo.runtime = runtime


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.stop()


# ---- Flow ------------------------------------------------------------------------------
# Redis hiccups are retried soon (kopf's default is a minute), not given up on.
RETRY_SECONDS = 3.0


@kopf.on.resume(GROUP, VERSION, "flows", backoff=RETRY_SECONDS)
@kopf.on.create(GROUP, VERSION, "flows", backoff=RETRY_SECONDS)
async def flow_admitted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Once: the Flow's event handler runs first and may have admitted it already.
    await _admit_once(body, memo)


async def _admit_once(body: kopf.Body, memo: kopf.Memo) -> None:
    await memo.runtime.ensure_tenant(body["metadata"]["namespace"], _involved("Flow", body))
    await memo.runtime.flows.admit(body, once=True)


@kopf.on.update(GROUP, VERSION, "flows", field="spec.suspend", backoff=RETRY_SECONDS)
async def flow_suspend_changed(body: kopf.Body, new: Any, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.flows.set_suspended(body, bool(new))


@kopf.on.update(GROUP, VERSION, "flows", field="spec.cancel", new=True,
                backoff=RETRY_SECONDS)
async def flow_cancelled(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.flows.cancel(body)


@kopf.on.update(GROUP, VERSION, "flows", field=("metadata", "annotations", ANNOTATION_RETRY),
                new=kopf.PRESENT, backoff=RETRY_SECONDS)
async def flow_retry_requested(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.flows.retry(body)


# Every event: a new generation is reported as observed, and a changed spec starts a new run
# (changePolicy Queue or Restart). The diff-based handlers above cannot see it: the nodes are
# left out of kopf's copy of the object.
@kopf.on.event(GROUP, VERSION, "flows")
async def flow_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    flows = memo.runtime.flows
    if admitted_before(body) and not flows.admitted(body["metadata"]["uid"]):
        # kopf runs on.resume only for an object it first meets in a listing. A standby
        # replica serves the admission webhook, and kopf remembers every Flow it judges on
        # UPDATE there; when the standby takes over, the listing finds those Flows already
        # known and resumes none of them, so nothing would report their status. So a Flow
        # kopf handled before is admitted on its first event here; kopf's resume handler,
        # which comes after this one in the same pass, then leaves it be.
        log.debug("Flow %s/%s: admitted on its first event", body["metadata"]["namespace"],
                  body["metadata"]["name"])
        await _admit_once(body, memo)
    await flows.observe(body)


def admitted_before(body: Mapping[str, Any]) -> bool:
    """Whether kopf handled this Flow before, in this replica or another (its copy of it is
    there), and it is not being deleted: a Flow to resume, not to create or finalize."""
    meta = body.get("metadata") or {}
    return (not meta.get("deletionTimestamp")
            and f"{KOPF_PREFIX}/{DIFFBASE_KEY}" in (meta.get("annotations") or {}))


@kopf.on.delete(GROUP, VERSION, "flows", backoff=RETRY_SECONDS)
async def flow_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.flows.delete(body)


# ---- FlowTemplate ----------------------------------------------------------------------
@kopf.on.event(GROUP, VERSION, "flowtemplates")
async def flowtemplate_event(type: str | None, body: kopf.Body, memo: kopf.Memo,
                             **_: Any) -> None:
    if type != "DELETED":
        await memo.runtime.templates.seen(body)


# ---- Queue -----------------------------------------------------------------------------
@kopf.on.event(GROUP, VERSION, "queues")
async def queue_event(type: str, namespace: str | None, name: str, spec: kopf.Spec,
                      uid: str | None, annotations: kopf.Annotations, meta: kopf.Meta,
                      memo: Any, **_: Any) -> None:
    assert namespace is not None  # Queue is a namespaced kind
    if type == "DELETED":
        memo.runtime.queues.gone(namespace, name)
    elif not meta.get("deletionTimestamp"):
        # A Queue being deleted is not served again: its finalizer's step below has dropped
        # (or is dropping) what Redis keeps for it, and must not see it written back.
        await memo.runtime.ensure_tenant(namespace, _queue(namespace, name, uid))
        await memo.runtime.queues.seen(namespace, name, spec, uid, annotations,
                                       meta.get("generation"))


# The finalizer's step: nothing of a deleted Queue stays in Redis (the event above may be
# missed while no operator runs; a finalizer is not).
@kopf.on.delete(GROUP, VERSION, "queues", backoff=RETRY_SECONDS)
async def queue_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    assert namespace is not None
    await memo.runtime.queues.deleted(namespace, name)


# One daemon per Queue: Job dispatch, or (Worker mode) the scaler of its worker Deployment.
@kopf.daemon(GROUP, VERSION, "queues", cancellation_timeout=5.0)
async def queue_dispatcher(namespace: str | None, name: str, spec: kopf.Spec, uid: str | None,
                           annotations: kopf.Annotations, meta: kopf.Meta, stopped: Any,
                           memo: Any, **_: Any) -> None:
    assert namespace is not None
    await memo.runtime.ensure_tenant(namespace, _queue(namespace, name, uid))
    await memo.runtime.queues.seen(namespace, name, spec, uid, annotations,
                                   meta.get("generation"))
    log.info("queue %s/%s: dispatching", namespace, name)
    try:
        await memo.runtime.queues.run(namespace, name, stopped)
    finally:
        log.info("queue %s/%s: no longer dispatching (%s)", namespace, name,
                 stopped.reason if stopped else "ended")


# ---- CronFlow ---------------------------------------------------------------------------
# One loop per CronFlow starts its Flows on schedule (kflow.kube.cronflows); a change of the
# CronFlow or of one of its Flows wakes it early.
@kopf.daemon(GROUP, VERSION, "cronflows", cancellation_timeout=5.0)
async def cronflow_scheduler(body: kopf.Body, stopped: Any, memo: Any, **_: Any) -> None:
    await memo.runtime.cronflows.run(body, stopped)


@kopf.on.event(GROUP, VERSION, "cronflows")
async def cronflow_event(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    assert namespace is not None
    memo.runtime.cronflows.changed(namespace, name)


@kopf.on.event(GROUP, VERSION, "flows", labels={LABEL_CRONFLOW: kopf.PRESENT})
async def cronflow_run_event(namespace: str | None, labels: kopf.Labels, memo: Any,
                             **_: Any) -> None:
    assert namespace is not None
    memo.runtime.cronflows.changed(namespace, labels[LABEL_CRONFLOW])


# ---- the namespaces' pods Secrets (tenants on) ------------------------------------------
async def pods_secret_event(type: str | None, namespace: str | None, body: kopf.Body,
                            memo: kopf.Memo, **_: Any) -> None:
    tenants = memo.runtime.tenants
    if tenants is not None and namespace is not None and type != "DELETED":
        await tenants.secret_changed(namespace, dict(body))


# Watched only with tenants on: the operator needs no access to Secrets otherwise.
if get_settings().tenants.enabled:
    kopf.on.event("v1", "secrets", labels={LABEL_MANAGED_BY: MANAGED_BY})(pods_secret_event)


def _involved(kind: str, body: kopf.Body) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": kind, "name": meta["name"],
            "namespace": meta["namespace"], "uid": meta.get("uid")}


def _queue(namespace: str, name: str, uid: str | None) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Queue", "name": name, "namespace": namespace,
            "uid": uid}


# ---- Job -------------------------------------------------------------------------------
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_FLOW_UID: kopf.PRESENT})
async def job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.executor.on_job_event(type, dict(body))


@kopf.on.event("", "v1", "pods", labels={LABEL_FLOW_UID: kopf.PRESENT})
async def pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type != "DELETED":
        await memo.runtime.executor.on_pod_event(dict(body))
