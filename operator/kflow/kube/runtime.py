"""The operator's live state and the operations kopf handlers delegate to, one method per event."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from kflow.api import SpecError, parse_duration
from kflow.api.errors import error_lines
from kflow.api.models import MAX_CONDITION_MESSAGE, Queue
from kflow.engine import Engine, FlowNotFound, FlowRef, QueueConfig
from kflow.graph.verdict import check_manifest
from kflow.kube.dispatch import Dispatchers, QueueInfo, wait_any
from kflow.kube.executor import JobExecutor, NodeEvent
from kflow.kube.jobs import API_VERSION, RedisEnv, job_state
from kflow.kube.k8s import KubeApi
from kflow.kube.metrics import Metrics
from kflow.kube.scaler import (
    LABEL_COMPONENT,
    WORKER_COMPONENT,
    PoolState,
    deployment_name,
    reconcile_worker_pool,
)
from kflow.kube.status import TERMINAL_PHASES, FlowView, StatusPatcher
from kflow.settings import Settings
from kflow.store.connect import connect

log = logging.getLogger("kflow.kube")

# `kflow.dev/scaler: external` on a Worker-mode Queue: the operator leaves its workers alone
# (KEDA, an HPA or a person sizes them); it still reports the queue's depth.
ANNOTATION_SCALER = "kflow.dev/scaler"
# A Worker-mode queue's pool is reconciled this often, and at once when work arrives.
POOL_TICK_SECONDS = 1.0
# Flows served by a worker pool progress without the operator seeing it; their status is
# refreshed while the pool works, and at least this often otherwise.
POOL_STATUS_SAFETY_SECONDS = 5.0


async def connect_redis(settings: Settings) -> Any:
    """The async Redis client the engine uses (single server or cluster; TLS per settings)."""
    return await connect(settings.redis_url, password=settings.redis_password,
                         tls=settings.redis_tls, tls_ca_file=settings.redis_tls_ca_file)


def flow_reference(namespace: str, name: str, uid: str) -> dict[str, Any]:
    """Enough of a Flow body to name it as the object of an Event."""
    return {"apiVersion": API_VERSION, "kind": "Flow",
            "metadata": {"name": name, "namespace": namespace, "uid": uid}}


def _flow_document(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": "Flow",
        "metadata": {k: meta.get(k) for k in ("name", "generateName", "namespace", "uid",
                                              "generation") if meta.get(k) is not None},
        "spec": dict(body.get("spec") or {}),
    }


class Runtime:
    """Everything one operator process holds: engine, API, dispatchers, executor, status."""

    def __init__(self, settings: Settings, engine: Engine, api: KubeApi,
                 redis_client: Any = None) -> None:
        self.settings = settings
        self.engine = engine
        self.api = api
        self.redis_client = redis_client
        self.identity = settings.identity or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = Metrics()
        self.dispatchers = Dispatchers(engine, identity=self.identity,
                                       batch=settings.take_batch, lease_ms=settings.lease_ms,
                                       idle_recheck=settings.idle_recheck_seconds)
        self.patcher = StatusPatcher(
            patch=api.patch_flow_status, snapshot=engine.snapshot,
            on_phase_change=self._phase_changed, interval=settings.status_interval_seconds,
            max_failures=settings.status_max_failures)
        self.redis_env = RedisEnv(settings.redis_secret_name, settings.redis_secret_url_key,
                                  settings.redis_secret_password_key, settings.redis_prefix)
        self.executor = JobExecutor(
            engine=engine, api=api, dispatchers=self.dispatchers,
            redis_env=self.redis_env,
            lease_ms=settings.lease_ms, create_retries=settings.job_create_retries,
            keep_finished_jobs=settings.keep_finished_jobs, node_queue=self.node_queue,
            mark_flow=self.patcher.mark, post_event=self._post_node_event,
            namespaces=settings.namespaces, metrics=self.metrics)
        # node -> queue name, per flow uid: which dispatcher to wake when a node becomes ready.
        self.flow_queues: dict[str, dict[str, str]] = {}
        # The set of queue names each flow uses: which flows a worker pool's progress touches.
        self.flow_queue_names: dict[str, frozenset[str]] = {}
        self.pools: dict[str, PoolState] = {}
        # Queue status as last written, and when: patched only on change, at most 1/s.
        self.queue_status: dict[str, tuple[dict[str, Any], float]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._events: set[asyncio.Task[None]] = set()

    @classmethod
    async def from_settings(cls, settings: Settings) -> Runtime:
        from kflow.kube.k8s import load_config

        load_config()
        client = await connect_redis(settings)
        return cls(settings, Engine(client, prefix=settings.redis_prefix), KubeApi(), client)

    def start(self) -> None:
        # The sync Kubernetes client runs in threads; asyncio's default pool (cores + 4) would
        # serialise a burst of Job creations on a small machine.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="kflow-kube"))
        self._tasks.append(asyncio.create_task(self.patcher.run(), name="kflow-status"))
        if self.settings.metrics_port:
            self._tasks.append(asyncio.create_task(
                self.metrics.serve(self.settings.metrics_port, self), name="kflow-metrics"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.redis_client is not None:
            await self.redis_client.aclose()

    def node_queue(self, flow_uid: str, node: str) -> str | None:
        return self.flow_queues.get(flow_uid, {}).get(node)

    # ---- Flows -------------------------------------------------------------------------
    async def admit_flow(self, body: Mapping[str, Any]) -> None:
        """Create or resume: validate, compile, record the graph in Redis, start tracking."""
        meta = body.get("metadata") or {}
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        spec = body.get("spec") or {}
        old_status = body.get("status") or {}
        view = self.patcher.track(FlowView(
            uid=uid, namespace=namespace, name=name, generation=meta.get("generation"),
            ttl_seconds=spec.get("ttlSecondsAfterFinished"), phase=old_status.get("phase"),
            conditions={c.get("type"): dict(c) for c in old_status.get("conditions") or []}))
        try:
            compiled = check_manifest(_flow_document(body)).compiled
            assert compiled is not None  # a Flow document always compiles or raises
        except SpecError as exc:
            # The same lines as `kflow lint` and the admission webhook, schema and graph
            # problems together; bounded like every condition message.
            message = "\n".join(error_lines(exc))[:MAX_CONDITION_MESSAGE]
            already = view.conditions.get("Valid", {})
            view.valid, view.invalid_message = False, message
            await self.patcher.flush(uid)
            if not (already.get("status") == "False" and already.get("message") == message):
                self.emit(namespace, name, uid, "Warning", "InvalidSpec", message)
            log.warning("Flow %s/%s is invalid: %s", namespace, name, message)
            return
        view.valid, view.invalid_message = True, ""
        self.flow_queues[uid] = {n.name: n.queue for n in compiled.nodes.values()}
        self.flow_queue_names[uid] = frozenset(compiled.queues)
        created = await self.engine.submit(
            FlowRef(uid=uid, namespace=namespace, name=name), compiled,
            ttl_seconds_after_finished=spec.get("ttlSecondsAfterFinished"),
            suspended=bool(spec.get("suspend") or spec.get("cancel")))
        if created:
            log.info("Flow %s/%s: %d nodes recorded in Redis", namespace, name,
                     len(compiled.nodes))
            if spec.get("cancel"):
                await self.cancel_flow(body)
        else:
            # Resumed after a restart: a crash between a flow step and its queue step left
            # ready nodes off their queue; put them back.
            await self.engine.reconcile_flow(uid)
        self.refresh_missing_queues(namespace)
        for queue in compiled.queues:
            self.dispatchers.kick(f"{namespace}/{queue}")
        await self.patcher.flush(uid)

    async def set_suspended(self, body: Mapping[str, Any], suspended: bool) -> None:
        uid = body["metadata"]["uid"]
        try:
            if suspended:
                await self.engine.suspend(uid)
            else:
                await self.engine.resume(uid)
        except FlowNotFound:
            return
        self.dispatchers.kick_namespace(body["metadata"]["namespace"])
        self.patcher.mark(uid)

    async def cancel_flow(self, body: Mapping[str, Any]) -> None:
        """Stop the flow: no more dispatches, running Jobs deleted, phase Cancelled."""
        meta = body["metadata"]
        try:
            await self.engine.cancel(meta["uid"])
        except FlowNotFound:
            return
        for job in await self.api.flow_jobs(meta["namespace"], meta["uid"]):
            if job_state(job) == "running":
                await self.api.delete_job(meta["namespace"], job["metadata"]["name"])
        self.dispatchers.kick_namespace(meta["namespace"])
        self.patcher.mark(meta["uid"])

    async def retry_flow(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        try:
            count = await self.engine.retry_failed(meta["uid"])
        except FlowNotFound:
            return
        log.info("Flow %s/%s: %d failed node(s) back to ready", meta["namespace"], meta["name"],
                 count)
        if count:
            self.emit(meta["namespace"], meta["name"], meta["uid"], "Normal", "Retried",
                      f"{count} failed node(s) retried")
        self.dispatchers.kick_namespace(meta["namespace"])
        self.patcher.mark(meta["uid"])

    async def delete_flow(self, body: Mapping[str, Any]) -> None:
        """Finalizer: the flow's Redis keys go now; its Jobs go with it."""
        meta = body["metadata"]
        uid = meta["uid"]
        self.patcher.forget(uid)
        self.flow_queues.pop(uid, None)
        self.flow_queue_names.pop(uid, None)
        await self.engine.delete(uid)
        # The garbage collector would remove them after the Flow; do it now, pods included.
        for job in await self.api.flow_jobs(meta["namespace"], uid):
            await self.api.delete_job(meta["namespace"], job["metadata"]["name"])
        log.info("Flow %s/%s deleted: Redis keys and Jobs removed", meta["namespace"],
                 meta["name"])

    def _phase_changed(self, view: FlowView, previous: str) -> None:
        phase = view.phase or ""
        self.metrics.flow_phase(view.uid, phase)
        if not view.valid:
            return
        where = (view.namespace, view.name, view.uid)
        if phase == "Succeeded":
            progress = (view.last_status or {}).get("progress")
            self.emit(*where, "Normal", "FlowSucceeded", f"all nodes done ({progress})")
        elif phase == "Failed":
            failures = (view.last_status or {}).get("firstFailures") or []
            cause = f': node "{failures[0]["node"]}": {failures[0]["error"][:300]}' \
                if failures else ""
            self.emit(*where, "Warning", "FlowFailed", f"flow failed{cause}")
        elif phase == "Cancelled":
            self.emit(*where, "Normal", "FlowCancelled", "flow cancelled")
        if phase in TERMINAL_PHASES:
            self._schedule_ttl(view)

    def _schedule_ttl(self, view: FlowView) -> None:
        if view.ttl_seconds is None or view.ttl_task is not None:
            return
        finished = (view.last_status or {}).get("finishedAt")
        finished_at = datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp() \
            if finished else time.time()
        delay = max(0.0, finished_at + view.ttl_seconds - time.time())

        async def expire() -> None:
            await asyncio.sleep(delay)
            log.info("Flow %s/%s: ttlSecondsAfterFinished passed; deleting it", view.namespace,
                     view.name)
            await self.api.delete_flow(view.namespace, view.name)

        view.ttl_task = asyncio.create_task(expire())

    def _post_node_event(self, event: NodeEvent) -> None:
        self.emit(event.namespace, event.flow_name, event.flow_uid,
                  "Warning" if event.warning else "Normal", event.reason, event.message)

    def emit(self, namespace: str, name: str, uid: str, type: str, reason: str,
             message: str) -> None:
        """Post a Kubernetes Event on a Flow, in the background (never delays the caller)."""
        involved = {**flow_reference(namespace, name, uid)["metadata"], "kind": "Flow",
                    "apiVersion": API_VERSION}

        async def post() -> None:
            try:
                await self.api.post_event(involved, type=type, reason=reason, message=message,
                                          component="kflow-operator", instance=self.identity)
            except Exception as exc:  # an Event is a courtesy; the status says it too
                log.warning("could not post %s Event on Flow %s/%s: %s", reason, namespace,
                            name, exc)

        task = asyncio.create_task(post())
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    def refresh_missing_queues(self, namespace: str) -> None:
        """Recompute the QueueMissing condition of every flow of the namespace."""
        for uid, view in list(self.patcher.views.items()):
            if view.namespace != namespace or uid not in self.flow_queues:
                continue
            missing = tuple(sorted({q for q in self.flow_queues[uid].values()
                                    if f"{namespace}/{q}" not in self.dispatchers.queues}))
            if missing != view.missing_queues:
                view.missing_queues = missing
                self.patcher.mark(uid)

    # ---- Queues ------------------------------------------------------------------------
    async def queue_seen(self, namespace: str, name: str, spec: Mapping[str, Any],
                         uid: str | None = None,
                         annotations: Mapping[str, str] | None = None) -> None:
        """A Queue was created or changed: its settings apply from the next dispatch on."""
        rate = spec.get("rateLimit") or {}
        info = QueueInfo(
            namespace=namespace, name=name, mode=spec.get("mode") or "Job",
            template=dict(spec.get("template") or {}), concurrency=spec.get("concurrency"),
            rate_max=rate.get("max"),
            rate_per_ms=parse_duration(rate["per"]) if rate.get("per") is not None else None,
            uid=uid, spec=copy.deepcopy(dict(spec)),
            external_scaler=(annotations or {}).get(ANNOTATION_SCALER) == "external")
        previous = self.dispatchers.queues.get(info.queue_id)
        if previous is not None and info.uid is None:
            info.uid = previous.uid  # the daemon's call does not know it; the event's did
        if previous != info:
            await self.engine.configure_queue(info.queue_id, QueueConfig(
                concurrency=info.concurrency, rate_max=info.rate_max,
                rate_per_ms=info.rate_per_ms, max_stalled=self.settings.max_stalled))
            self.dispatchers.queues[info.queue_id] = info
            log.info("Queue %s: mode %s, concurrency %s, rate %s/%sms", info.queue_id, info.mode,
                     info.concurrency, info.rate_max, info.rate_per_ms)
            self.dispatchers.kick(info.queue_id)
            if previous is None:
                self.refresh_missing_queues(namespace)

    def queue_gone(self, namespace: str, name: str) -> None:
        queue_id = f"{namespace}/{name}"
        self.dispatchers.queues.pop(queue_id, None)
        self.pools.pop(queue_id, None)
        self.queue_status.pop(queue_id, None)
        self.refresh_missing_queues(namespace)

    async def run_queue(self, namespace: str, name: str, stopped: Any) -> None:
        """The queue's loops until `stopped`: Job dispatch, and the worker pool's scaler."""
        queue_id = f"{namespace}/{name}"
        await asyncio.gather(
            self.dispatchers.run(queue_id, stopped, self.executor.launch, self._housekeep),
            self._run_pool(queue_id, stopped))

    async def _housekeep(self, queue_id: str) -> None:
        await self.executor.housekeep(queue_id)
        ready, active, delayed = await self.engine.queue_depth(queue_id)
        self.metrics.queue_depth(queue_id, ready, active, delayed)
        await self._report_queue(queue_id, {"waiting": ready, "active": active,
                                            "delayed": delayed})

    async def _report_queue(self, queue_id: str, status: dict[str, Any]) -> None:
        """Patch the Queue's status when it changed and a second has passed since the last."""
        last, at = self.queue_status.get(queue_id, ({}, -1e9))
        if status == last or time.monotonic() - at < 1.0:
            return
        namespace, _, name = queue_id.partition("/")
        self.queue_status[queue_id] = (status, time.monotonic())
        await self.api.patch_queue_status(namespace, name, status)

    async def _run_pool(self, queue_id: str, stopped: Any) -> None:
        """Reconcile a Worker-mode queue's Deployment every second, and when kicked."""
        wake = self.dispatchers.pool_wakeup(queue_id)
        was_worker: bool | None = None
        last_depth: tuple[int, int] | None = None
        last_marked = 0.0
        failing = ""
        while not stopped:
            wake.clear()
            info = self.dispatchers.queues.get(queue_id)
            timeout = POOL_TICK_SECONDS
            try:
                if info is None:
                    pass
                elif info.mode != "Worker":
                    if was_worker is not False:
                        await self._drop_pool(info)
                    was_worker = False
                    timeout = 60.0  # only a mode change (which kicks) matters here
                else:
                    was_worker = True
                    depth = await self._pool_tick(info)
                    # Workers move the queue's flows on without the operator seeing it:
                    # refresh their status, and wake the other queues their parents use.
                    busy = depth[0] + depth[1] > 0 or depth != last_depth
                    if busy or time.monotonic() - last_marked >= POOL_STATUS_SAFETY_SECONDS:
                        self._pool_progress(info)
                        last_marked = time.monotonic()
                    last_depth = depth
                failing = ""
            except Exception as exc:
                # Logged once per distinct error, not every second while it lasts.
                if str(exc) != failing:
                    log.exception("worker pool of queue %s: reconcile failed; retrying every "
                                  "%.0f s", queue_id, timeout)
                failing = str(exc)
            await wait_any(wake, stopped, timeout)

    async def _pool_tick(self, info: QueueInfo) -> tuple[int, int]:
        """One reconcile of the queue's pool; returns (ready, active)."""
        queue_id = info.queue_id
        queue = Queue.model_validate({"metadata": {"name": info.name, "namespace": info.namespace,
                                                   "uid": info.uid}, "spec": info.spec})
        await self.engine.promote_due(queue_id)  # no dispatcher promotes delayed nodes here
        if info.external_scaler:
            ready, active, delayed = await self.engine.queue_depth(queue_id)
            self.metrics.queue_depth(queue_id, ready, active, delayed)
            await self._report_queue(queue_id, {"waiting": ready, "active": active,
                                                "delayed": delayed})
            return ready, active
        state = self.pools.setdefault(queue_id, PoolState())
        report = await reconcile_worker_pool(queue, self.engine, self.api, state,
                                             redis=self.redis_env)
        self.metrics.queue_depth(queue_id, report.ready, report.active, report.delayed)
        self.metrics.pool_size(queue_id, report.replicas)
        await self._report_queue(queue_id, {
            "waiting": report.ready, "active": report.active, "delayed": report.delayed,
            "workers": report.pods})
        return report.ready, report.active

    def _pool_progress(self, info: QueueInfo) -> None:
        """Mark for a status refresh the unfinished flows that use this queue; kick their
        other queues (a worker's completion may have made a parent ready there)."""
        others: set[str] = set()
        for uid, names in list(self.flow_queue_names.items()):
            view = self.patcher.views.get(uid)
            if info.name not in names or view is None or view.namespace != info.namespace \
                    or view.phase in TERMINAL_PHASES:
                continue
            self.patcher.mark(uid)
            others.update(names)
        others.discard(info.name)
        for name in others:
            other = self.dispatchers.queues.get(f"{info.namespace}/{name}")
            # Worker-mode queues look every second anyway; kicking them would make two busy
            # pools of one flow wake each other without pause.
            if other is not None and other.mode == "Job":
                self.dispatchers.kick(other.queue_id)

    async def _drop_pool(self, info: QueueInfo) -> None:
        """A queue not in Worker mode keeps no worker Deployment (its mode may have changed)."""
        self.pools.pop(info.queue_id, None)
        self.metrics.pool_size(info.queue_id, None)
        name = deployment_name(info.name)
        found = await self.api.read_deployment(info.namespace, name)
        labels = ((found or {}).get("metadata") or {}).get("labels") or {}
        if found is not None and labels.get(LABEL_COMPONENT) == WORKER_COMPONENT:
            await self.api.delete_deployment(info.namespace, name)
            log.info("Queue %s: not in Worker mode; Deployment %s deleted", info.queue_id, name)
