"""Size the worker Deployment of a Worker-mode queue from its depth: up at once, down slowly."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from kflow.api.ids import QueueId
from kflow.api.models import Queue, Workers
from kflow.kube.jobs import LABEL_QUEUE, RedisEnv, label_value

log = logging.getLogger("kflow.scaler")

# A pool asked for fewer workers (but not none) shrinks only after asking for fewer this
# long: a burst that drains and refills within the window keeps its pods, so no flapping.
SCALE_DOWN_WINDOW_MS = 30_000
LABEL_COMPONENT = "app.kubernetes.io/component"
WORKER_COMPONENT = "kflow-worker"
ANNOTATION_TEMPLATE_HASH = "kflow.dev/template-hash"
# A pool whose size is settled is re-read from the API this often (someone may have deleted
# or scaled it); while pods are still coming or going it is read on every reconcile.
RESYNC_SECONDS = 10.0
# The worker hands back what it holds this long before the kubelet's SIGKILL.
GRACE_MARGIN_S = 2
_HANDLER = re.compile(r"^[\w./-]+:[\w.]+$")


def _clamp(n: int, low: int, high: int) -> int:
    return max(low, min(high, n))


def desired_replicas(
    ready: int,
    active: int,
    workers_spec: Workers,
    idle_since_ms: int | None,
    now_ms: int,
    current: int,
    *,
    below_since_ms: int | None = None,
    window_ms: int = SCALE_DOWN_WINDOW_MS,
) -> int:
    """The worker count to run now.

    The need is clamp(ceil((ready + active) / nodesPerWorker), min, max). More than
    `current`: at once. None at all: keep `current` until the queue has been empty since
    `idle_since_ms` for idleSeconds, then `min` (0 scales to zero). Fewer but some: keep
    `current` until the need has been lower since `below_since_ms` for `window_ms`. The
    result never leaves [min, max], even when `current` does (the spec changed).
    """
    low, high = workers_spec.min, workers_spec.max
    work = max(0, ready) + max(0, active)
    need = _clamp(math.ceil(work / workers_spec.nodes_per_worker), low, high)
    held = _clamp(current, low, high)
    if need >= held:
        return need
    if work == 0:
        idle_for = None if idle_since_ms is None else now_ms - idle_since_ms
        return low if idle_for is not None and idle_for >= workers_spec.idle_seconds * 1000 \
            else held
    if below_since_ms is not None and now_ms - below_since_ms >= window_ms:
        return need
    return held


@dataclass
class PoolClock:
    """What `desired_replicas` needs to remember between reconciles of one queue."""

    idle_since_ms: int | None = None
    below_since_ms: int | None = None

    def observe(self, work: int, need: int, current: int, now_ms: int) -> None:
        if work == 0:
            self.idle_since_ms = self.idle_since_ms or now_ms
        else:
            self.idle_since_ms = None
        if need < current:
            self.below_since_ms = self.below_since_ms or now_ms
        else:
            self.below_since_ms = None


def deployment_name(queue_name: str) -> str:
    """`kflow-worker-<queue>`, at most 63 characters. A longer one is cut and ends with a hash
    of the whole queue name, so two queues whose names share their first 50 characters get
    two Deployments (they used to share one)."""
    name = f"kflow-worker-{queue_name}"
    if len(name) <= 63:
        return name
    suffix = "-" + hashlib.sha256(queue_name.encode()).hexdigest()[:8]
    return name[:63 - len(suffix)].rstrip("-.") + suffix


def legacy_deployment_name(queue_name: str) -> str | None:
    """The name kflow gave the queue's pool before names carried a hash (cut at 63), when it
    differs from today's: a pool left under it after an upgrade is retired."""
    old = f"kflow-worker-{queue_name}"[:63].rstrip("-")
    return old if old != deployment_name(queue_name) else None


class LegacyPoolApi(Protocol):
    async def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def delete_deployment(self, namespace: str, name: str) -> None: ...


async def retire_legacy_pool(queue_id: QueueId, uid: str | None, api: LegacyPoolApi) -> bool:
    """Delete the queue's pool left under its pre-hash name, if it is this queue's (another
    queue that shared the old name may own it); True when one was deleted."""
    old = legacy_deployment_name(queue_id.name)
    if old is None:
        return False
    found = await api.read_deployment(queue_id.namespace, old)
    if found is None or not owns(found, queue_id.name, uid):
        return False
    await api.delete_deployment(queue_id.namespace, old)
    log.info("Queue %s: Deployment %s (the pool's name before kflow named pools by a hash) "
             "deleted; the pool is now %s", queue_id, old, deployment_name(queue_id.name))
    return True


class NotOurDeployment(Exception):
    """A Deployment has the name of a queue's worker pool but is not that pool: kflow does not
    scale, replace or delete it."""


def owns(found: dict[str, Any], queue_name: str, queue_uid: str | None) -> bool:
    """Whether the Deployment `found` is the worker pool of the queue `queue_name` (of uid
    `queue_uid`, when known): kflow's worker labels naming that queue and, when it has a
    Queue owner, that Queue."""
    meta = found.get("metadata") or {}
    labels = meta.get("labels") or {}
    if (labels.get(LABEL_COMPONENT) != WORKER_COMPONENT
            or labels.get(LABEL_QUEUE) != label_value(queue_name)):
        return False
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Queue"]
    return queue_uid is None or not owners or any(o.get("uid") == queue_uid for o in owners)


def not_ours_message(queue_id: QueueId, name: str) -> str:
    return (f"Queue {queue_id}: Deployment {name} exists but is not this Queue's worker pool "
            f"(kflow's pools carry the labels {LABEL_COMPONENT}={WORKER_COMPONENT} and "
            f"{LABEL_QUEUE}={label_value(queue_id.name)} and are owned by their Queue); kflow "
            "leaves it alone and runs no workers for this queue: delete or rename that "
            "Deployment, or give the Queue another name")


def worker_command(command: list[str], args: list[str], queue_id: QueueId, per: int,
                   grace_ms: int) -> list[str] | None:
    """The `kflow worker` command line for a Job-mode container, or None to keep it as is.

    `kflow-run module:function` as command (or command + args), and a lone `module:function`
    in args with no command (the runner image's entrypoint is kflow-run), both become
    `kflow worker --queue <ns>/<name> --concurrency <per> --grace-ms <ms> module:function`.
    """
    line = command + args
    if len(line) == 2 and line[0] == "kflow-run":
        handler = line[1]
    elif not command and len(args) == 1 and _HANDLER.match(args[0]):
        handler = args[0]
    else:
        return None
    return ["kflow", "worker", "--queue", queue_id, "--concurrency", str(per),
            "--grace-ms", str(grace_ms), handler]


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def build_deployment(queue: Queue, replicas: int, *,
                     redis: RedisEnv | None = None) -> dict[str, Any]:
    """The apps/v1 Deployment of the queue's workers, from its pod template.

    A container whose command is `kflow-run module:function` (the Job-mode form) is turned
    into `kflow worker --queue <ns>/<name> --concurrency <nodesPerWorker> module:function`,
    so one template serves both modes. The Deployment is owned by the Queue (when its uid is
    known), so deleting the Queue garbage-collects its workers.
    """
    redis = redis or RedisEnv()
    name = queue.metadata.name or "queue"
    namespace = queue.metadata.namespace or "default"
    per = queue.spec.workers.nodes_per_worker if queue.spec.workers else 1
    labels = {LABEL_QUEUE: label_value(name), LABEL_COMPONENT: WORKER_COMPONENT}
    template = copy.deepcopy(queue.spec.template or {})
    meta = template.setdefault("metadata", {}) or {}
    template["metadata"] = meta
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    pod = template.setdefault("spec", {})
    containers = pod.get("containers") or []
    if not containers:
        raise ValueError(f"Queue {namespace}/{name}: spec.template.spec.containers is empty; "
                         "give the worker container (image and command)")
    # A Deployment's pods must restart; a Job-mode template may say Never or OnFailure.
    pod.pop("restartPolicy", None)
    grace_s = int(pod.get("terminationGracePeriodSeconds", 30))
    main = containers[0]
    command = worker_command(list(main.get("command") or []), list(main.get("args") or []),
                             QueueId(namespace, name), per,
                             max(1000, (grace_s - GRACE_MARGIN_S) * 1000))
    if command is not None:
        main["command"] = command
        main.pop("args", None)
    own = redis.env()
    own_names = {e["name"] for e in own}
    main["env"] = [e for e in (main.get("env") or []) if e.get("name") not in own_names] + own
    redis.mount_ca(pod, main)
    metadata: dict[str, Any] = {
        "name": deployment_name(name), "namespace": namespace, "labels": labels,
        "annotations": {ANNOTATION_TEMPLATE_HASH: template_hash(template)},
    }
    if queue.metadata.uid:
        metadata["ownerReferences"] = [{
            "apiVersion": queue.api_version, "kind": "Queue", "name": name,
            "uid": queue.metadata.uid, "controller": True}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": template,
        },
    }


class PoolApi(Protocol):
    """The Deployment calls the scaler makes (kflow.kube.k8s.KubeApi has them); plain dicts."""

    async def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_deployment(self, namespace: str, body: dict[str, Any]) -> bool: ...

    async def replace_deployment(self, namespace: str, name: str,
                                 body: dict[str, Any]) -> None: ...

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None: ...


@dataclass
class PoolState:
    """What the scaler remembers of one queue's pool between reconciles."""

    clock: PoolClock = field(default_factory=PoolClock)
    replicas: int | None = None  # spec.replicas as last read or written; None: read it
    pods: int = 0  # status.replicas as last read: worker pods that exist
    template_hash: str | None = None
    read_at: float = -math.inf  # time.monotonic() of the last read


@dataclass(frozen=True)
class PoolReport:
    """One reconcile's outcome: the queue's depth and the pool it asked for."""

    ready: int
    active: int
    delayed: int
    replicas: int  # spec.replicas now
    pods: int  # worker pods last seen


async def reconcile_worker_pool(queue: Queue | dict[str, Any], engine: Any, api: PoolApi,
                                state: PoolState, *, redis: RedisEnv | None = None,
                                now_ms: int | None = None,
                                resync_seconds: float = RESYNC_SECONDS) -> PoolReport:
    """Keep the queue's worker Deployment at `desired_replicas`.

    Creates the Deployment when missing; replaces it when the Queue's template changed (a
    hash annotation tells); otherwise writes only the replica count, and only when it
    changes. The Deployment is read only while it converges or every `resync_seconds`, so a
    settled pool costs the API server nothing but that.
    """
    if isinstance(queue, dict):
        queue = Queue.model_validate(queue)
    workers = queue.spec.workers
    if queue.spec.mode != "Worker" or workers is None:
        raise ValueError(f"Queue {queue.queue_id}: not in Worker mode with spec.workers set; "
                         "only Worker-mode queues have a worker pool")
    name = deployment_name(queue.metadata.name or "queue")
    namespace = queue.metadata.namespace or "default"
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    ready, active, delayed = await engine.queue_depth(queue.queue_id)
    if (state.replicas is None or state.pods != state.replicas
            or time.monotonic() - state.read_at >= resync_seconds):
        found = await api.read_deployment(namespace, name)
        state.read_at = time.monotonic()
        if found is not None and not owns(found, queue.metadata.name or "queue",
                                          queue.metadata.uid):
            state.replicas = None  # read again next time: it may be gone or fixed by then
            raise NotOurDeployment(not_ours_message(queue.queue_id, name))
        if found is None:
            state.replicas, state.pods, state.template_hash = None, 0, None
        else:
            state.replicas = int((found.get("spec") or {}).get("replicas") or 0)
            state.pods = int((found.get("status") or {}).get("replicas") or 0)
            state.template_hash = ((found.get("metadata") or {}).get("annotations")
                                   or {}).get(ANNOTATION_TEMPLATE_HASH)
    current = state.replicas
    work = ready + active
    need = _clamp(math.ceil(work / workers.nodes_per_worker), workers.min, workers.max)
    state.clock.observe(work, need, current or 0, now)
    desired = desired_replicas(ready, active, workers, state.clock.idle_since_ms, now,
                               current or 0, below_since_ms=state.clock.below_since_ms)
    body = build_deployment(queue, desired, redis=redis)
    wanted_hash = body["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]
    if current is None:
        if not await api.create_deployment(namespace, body):
            state.read_at = -math.inf  # someone made it meanwhile: read it next time
            return PoolReport(ready, active, delayed, desired, state.pods)
        log.info("Queue %s: created Deployment %s with %d workers", queue.queue_id, name, desired)
    elif state.template_hash != wanted_hash:
        await api.replace_deployment(namespace, name, body)
        log.info("Queue %s: Deployment %s follows the changed template (%d workers)",
                 queue.queue_id, name, desired)
    elif desired != current:
        await api.scale_deployment(namespace, name, desired)
        log.info("Queue %s: workers %d -> %d (ready %d, active %d)", queue.queue_id, current,
                 desired, ready, active)
    state.replicas, state.template_hash = desired, wanted_hash
    return PoolReport(ready, active, delayed, desired, state.pods)
