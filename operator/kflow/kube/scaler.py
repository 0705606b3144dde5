"""Size the worker Deployment of a Worker-mode queue from its depth: up at once, down slowly."""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from kflow.api.models import Queue, Workers
from kflow.kube.jobs import LABEL_QUEUE, RedisEnv, label_value

log = logging.getLogger("kflow.scaler")

# A pool asked for fewer workers (but not none) shrinks only after asking for fewer this
# long: a burst that drains and refills within the window keeps its pods, so no flapping.
SCALE_DOWN_WINDOW_MS = 30_000
LABEL_COMPONENT = "app.kubernetes.io/component"
WORKER_COMPONENT = "kflow-worker"


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


@dataclass
class _Clocks:
    by_queue: dict[str, PoolClock] = field(default_factory=dict)


_clocks = _Clocks()  # per operator process; a restart only delays the next scale-down


def deployment_name(queue_name: str) -> str:
    return f"kflow-worker-{queue_name}"[:63].rstrip("-")


def build_deployment(queue: Queue, replicas: int, *,
                     redis: RedisEnv | None = None) -> dict[str, Any]:
    """The apps/v1 Deployment of the queue's workers, from its pod template.

    A container whose command is `kflow-run module:function` (the Job-mode form) is turned
    into `kflow worker --queue <ns>/<name> --concurrency <nodesPerWorker> module:function`,
    so one template serves both modes.
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
    main = containers[0]
    command = list(main.get("command") or []) + list(main.get("args") or [])
    if command and command[0] == "kflow-run" and len(command) == 2:
        main["command"] = ["kflow", "worker", "--queue", f"{namespace}/{name}",
                           "--concurrency", str(per), command[1]]
        main.pop("args", None)
    own = {"KFLOW_REDIS_URL", "KFLOW_REDIS_PASSWORD", "KFLOW_REDIS_PREFIX"}
    main["env"] = [e for e in (main.get("env") or []) if e.get("name") not in own] + [
        {"name": "KFLOW_REDIS_URL", "valueFrom": {"secretKeyRef": {
            "name": redis.secret_name, "key": redis.url_key}}},
        {"name": "KFLOW_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": redis.secret_name, "key": redis.password_key, "optional": True}}},
        {"name": "KFLOW_REDIS_PREFIX", "value": redis.prefix},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(name), "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": template,
        },
    }


async def reconcile_worker_pool(queue: Queue | dict[str, Any], engine: Any, apps_api: Any, *,
                                redis: RedisEnv | None = None,
                                now_ms: int | None = None) -> int:
    """Keep the queue's worker Deployment at `desired_replicas`; returns the replica count.

    `apps_api` is a kubernetes `AppsV1Api` (sync client: its calls run in threads). Creates
    the Deployment when missing; patches only `spec.replicas` when the count changes, so
    edits to the template reach the pods through the Queue, not through this loop.
    """
    from kubernetes.client.exceptions import ApiException

    if isinstance(queue, dict):
        queue = Queue.model_validate(queue)
    workers = queue.spec.workers
    if queue.spec.mode != "Worker" or workers is None:
        return 0
    name = deployment_name(queue.metadata.name or "queue")
    namespace = queue.metadata.namespace or "default"
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    ready, active, _ = await engine.queue_depth(queue.queue_id)
    try:
        current_obj = await asyncio.to_thread(
            apps_api.read_namespaced_deployment_scale, name, namespace)
        current: int | None = int(current_obj.spec.replicas or 0)
    except ApiException as exc:
        if exc.status != 404:
            raise
        current = None
    clock = _clocks.by_queue.setdefault(queue.queue_id, PoolClock())
    work = ready + active
    need = _clamp(math.ceil(work / workers.nodes_per_worker), workers.min, workers.max)
    clock.observe(work, need, current or 0, now)
    desired = desired_replicas(ready, active, workers, clock.idle_since_ms, now, current or 0,
                               below_since_ms=clock.below_since_ms)
    if current is None:
        body = build_deployment(queue, desired, redis=redis)
        await asyncio.to_thread(apps_api.create_namespaced_deployment, namespace, body)
        log.info("Queue %s: created Deployment %s with %d workers", queue.queue_id, name, desired)
    elif desired != current:
        await asyncio.to_thread(apps_api.patch_namespaced_deployment_scale, name, namespace,
                                {"spec": {"replicas": desired}})
        log.info("Queue %s: workers %d -> %d (ready %d, active %d)", queue.queue_id, current,
                 desired, ready, active)
    return desired
