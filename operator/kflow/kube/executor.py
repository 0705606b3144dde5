"""The Job executor: launches attempts as Jobs and turns finished Jobs into engine outcomes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from kflow.api.ids import FlowId, QueueId
from kflow.engine import MISSING, Attempt, Engine, FlowNotFound
from kflow.kube.dispatch import Dispatchers, FlowRoutes, QueueInfo
from kflow.kube.events import EventPoster, FlowEvent
from kflow.kube.jobs import (
    FATAL_REASONS,
    JobIdentity,
    RedisEnv,
    build_job,
    classify_failure,
    job_identity,
    job_state,
    main_state,
    pod_job_name,
    pod_succeeded,
    stuck_reason,
    termination_output,
)
from kflow.kube.k8s import KubeApi
from kflow.kube.metrics import Metrics
from kflow.kube.podlogs import PodLogKeeper
from kflow.kube.status import StatusMarks
from kflow.settings import DispatchSettings

log = logging.getLogger("kflow.kube.executor")


class JobExecutor:
    """Launches Jobs for attempts; processes each finished Job exactly once per process.

    Duplicate processing (a watch replay, a restart) is harmless anyway: the engine fences
    every outcome by the attempt's token.
    """

    def __init__(self, *, engine: Engine, api: KubeApi, dispatchers: Dispatchers,
                 routes: FlowRoutes, events: EventPoster, marks: StatusMarks, metrics: Metrics,
                 redis_env: RedisEnv, settings: DispatchSettings,
                 namespaces: list[str] | None = None) -> None:
        self.engine = engine
        self.api = api
        self.dispatchers = dispatchers
        self.routes = routes  # which queue a newly ready parent is on
        self.events = events
        self.marks = marks  # flows whose status changed
        self.metrics = metrics
        self.redis_env = redis_env
        self.lease_ms = settings.lease_ms
        self.create_retries = settings.job_create_retries
        self.keep_finished_jobs = settings.keep_finished_jobs
        # Each attempt's log tail is kept with the flow before its Job goes.
        self.pod_logs = PodLogKeeper(api=api, store=engine,
                                     attempt_bytes=settings.pod_log_bytes,
                                     flow_bytes=settings.pod_log_flow_bytes)
        self.namespaces = list(namespaces or [])  # where to list Jobs on resync; [] = all
        # Running attempts by Job name, grouped per queue id for lease renewal.
        self.running: dict[str, tuple[str, Attempt]] = {}
        self._processed: OrderedDict[str, None] = OrderedDict()
        self._stuck_reported: OrderedDict[str, None] = OrderedDict()
        # When a parent became ready (its last child's Job seen finished): unlock latency.
        self._unlocked: dict[tuple[str, str], float] = {}
        self._synced_at = 0.0
        self._sync_lock = asyncio.Lock()

    # ---- launching ---------------------------------------------------------------------
    async def launch(self, queue: QueueInfo, attempt: Attempt) -> None:
        """Create the Job of one attempt; a create that cannot succeed fails the attempt."""
        job = build_job(attempt, flow_uid=attempt.flow_uid, template=queue.template,
                        redis=self.redis_env)
        name = job["metadata"]["name"]
        self.running[name] = (queue.queue_id, attempt)
        delay = 0.2
        for _ in range(max(1, self.create_retries)):
            try:
                await self.api.create_job(attempt.namespace, job)
                unlocked = self._unlocked.pop((attempt.flow_uid, attempt.node), None)
                latency = None if unlocked is None else time.monotonic() - unlocked
                self.metrics.dispatched(queue.queue_id)
                if latency is not None:
                    self.metrics.unlocked(latency)
                if attempt.waited_ms is not None:
                    self.metrics.waited(queue.queue_id, attempt.waited_ms / 1000)
                log.info("Flow %s/%s node %s: Job %s created (attempt %d)%s", attempt.namespace,
                         attempt.flow_name, attempt.node, name, attempt.attempt,
                         "" if latency is None else
                         f", {latency * 1000:.0f} ms after its last child finished")
                return
            except ApiException as exc:
                if exc.status in (400, 403, 404, 422):
                    # The Queue's template or the namespace is wrong: retrying will not help.
                    message = f"cannot create Job {name}: {exc.status} {exc.reason}: " \
                              f"{_api_message(exc)}"
                    log.warning("Flow %s/%s node %s: %s", attempt.namespace,
                                attempt.flow_name, attempt.node, message)
                    self.running.pop(name, None)
                    await self._fail(attempt.flow_uid, attempt.namespace, attempt.flow_name,
                                     attempt.node, queue.queue_id, attempt.token, message,
                                     infrastructure=False)
                    return
                log.warning("creating Job %s failed (%s); retrying", name, exc.status)
            except Exception as exc:
                log.warning("creating Job %s failed (%s); retrying", name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.running.pop(name, None)
        await self._fail(attempt.flow_uid, attempt.namespace, attempt.flow_name, attempt.node,
                         queue.queue_id, attempt.token,
                         f"cannot create Job {name}: the API server kept refusing",
                         infrastructure=True)

    # ---- the Job watch -----------------------------------------------------------------
    async def on_job_event(self, event_type: str | None, job: dict[str, Any]) -> None:
        """One watch event of a kflow Job: finished → outcome; vanished → infrastructure retry."""
        ident = job_identity(job)
        if ident is None:
            return
        name = job["metadata"]["name"]
        queue_id = QueueId(ident.namespace, ident.queue)
        state = job_state(job)
        if state == "running" and event_type != "DELETED":
            if name not in self._processed:
                self.running[name] = (queue_id, _attempt_of(ident))
            return
        if name in self._processed:
            return
        self._remember(name)
        self.running.pop(name, None)
        try:
            if state == "succeeded":
                pods = await self.api.job_pods(ident.namespace, name)
                if await self._succeeded(ident, name, queue_id, pods):
                    self.metrics.node_finished(queue_id, state, _run_seconds(job))
            elif state == "failed":
                if await self._failed(ident, job, name, queue_id):
                    self.metrics.node_finished(queue_id, state, _run_seconds(job))
            else:  # deleted while running: the pod went with it
                await self._fail(ident.flow_uid, ident.namespace, ident.flow_name, ident.node,
                                 queue_id, ident.token, f"Job {name} was deleted while running",
                                 infrastructure=True)
                return
        except FlowNotFound:
            log.debug("Job %s belongs to a flow no longer in Redis; nothing to record", name)
        except Exception:
            self._processed.pop(name, None)  # let the next event or resync try again
            raise
        else:
            # After the outcome (parents are already unlocked), before the Job and its pod go.
            await self.pod_logs.keep_job(ident, name, failed=state == "failed")
        if not self.keep_finished_jobs and event_type != "DELETED":
            await self.api.delete_job(ident.namespace, name)

    async def _succeeded(self, ident: JobIdentity, name: str, queue_id: QueueId,
                         pods: list[dict[str, Any]]) -> bool:
        """Record the attempt's result (its pods' termination message, else the value the pod
        stored in Redis); whether the engine accepted it (not a replay)."""
        seen = time.monotonic()
        found, value = termination_output(pods)
        started = time.monotonic()
        outcome = await self.engine.complete(FlowId.of(ident.namespace, ident.flow_uid),
                                             ident.node, ident.token,
                                             value if found else MISSING)
        self.metrics.completed(queue_id, time.monotonic() - started, outcome.accepted)
        self.marks.mark(ident.flow_uid)
        self.dispatchers.kick(queue_id)  # capacity freed
        if len(self._unlocked) > 10_000:  # parents never launched (flow deleted): forget
            self._unlocked.clear()
        for parent in outcome.newly_ready:
            self._unlocked[(ident.flow_uid, parent)] = seen
            parent_queue = self.routes.queue_of(ident.flow_uid, parent)
            if parent_queue is None:
                self.dispatchers.kick_namespace(ident.namespace)
            else:
                self.dispatchers.kick(QueueId(ident.namespace, parent_queue))
        log.info("Flow %s/%s node %s: succeeded (attempt %d)%s", ident.namespace,
                 ident.flow_name, ident.node, ident.attempt,
                 "" if outcome.accepted else " (already recorded)")
        return outcome.accepted

    async def _failed(self, ident: JobIdentity, job: dict[str, Any], name: str,
                      queue_id: QueueId) -> bool:
        pods = await self.api.job_pods(ident.namespace, name)
        failure = classify_failure(job, pods)
        return await self._fail(ident.flow_uid, ident.namespace, ident.flow_name, ident.node,
                                queue_id, ident.token, failure.error,
                                infrastructure=failure.infrastructure, attempt=ident.attempt)

    async def _fail(self, flow_uid: str, namespace: str, flow_name: str, node: str,
                    queue_id: QueueId, token: str, error: str, *, infrastructure: bool,
                    attempt: int = 0) -> bool:
        """Record the attempt's failure; whether the engine accepted it (not a replay)."""
        outcome = await self.engine.fail(FlowId.of(namespace, flow_uid), node, token, error,
                                         infrastructure=infrastructure)
        self.metrics.failed(queue_id, outcome.action)
        self.marks.mark(flow_uid)
        self.dispatchers.kick(queue_id)
        if not outcome.accepted:
            return False
        log.info("Flow %s/%s node %s: attempt %d failed (%s) -> %s", namespace, flow_name, node,
                 attempt, error[:200], outcome.action)
        if outcome.action == "failed":
            self.events.post(FlowEvent(flow_uid, namespace, flow_name, "NodeFailed",
                                       f'node "{node}" failed: {error[:900]}', warning=True))
        if outcome.phase not in ("Running", "Pending", "Suspended"):
            # A failParent chain may have unlocked or ended other nodes: look at every queue.
            self.dispatchers.kick_namespace(namespace)
        elif outcome.action == "failed":
            self.dispatchers.kick_namespace(namespace)  # continueParent/ignore/remove unlock
        return True

    async def on_pod_event(self, pod: dict[str, Any]) -> None:
        """A kflow pod whose attempt succeeded settles it at once; one that cannot start says so
        on its Flow, and a hopeless one fails the attempt."""
        ident = job_identity(pod)
        if ident is None:
            return
        if pod_succeeded(pod):
            await self._pod_succeeded(ident, pod)
            return
        stuck = stuck_reason(pod)
        if stuck is None:
            return
        reason, message = stuck
        pod_name = pod["metadata"]["name"]
        key = f"{pod_name}/{reason}"
        if key in self._stuck_reported:
            return
        self._stuck_reported[key] = None
        while len(self._stuck_reported) > 10_000:
            self._stuck_reported.popitem(last=False)
        text = f'node "{ident.node}" (attempt {ident.attempt}): pod {pod_name} cannot start: ' \
               f"{reason}: {message}"[:1000]
        self.events.post(FlowEvent(ident.flow_uid, ident.namespace, ident.flow_name,
                                   "NodeStuck", text, warning=True))
        if reason in FATAL_REASONS:
            job = pod_job_name(pod)
            queue_id = QueueId(ident.namespace, ident.queue)
            if job:
                self._remember(job)
                self.running.pop(job, None)
            await self._fail(ident.flow_uid, ident.namespace, ident.flow_name, ident.node,
                             queue_id, ident.token, text, infrastructure=False,
                             attempt=ident.attempt)
            await self.pod_logs.keep_stuck(ident, pod)  # it has no log: keep why
            if job:
                await self.api.delete_job(ident.namespace, job)

    async def _pod_succeeded(self, ident: JobIdentity, pod: dict[str, Any]) -> None:
        """Record a success from the pod's own status, before the Job controller marks the
        Job Complete; the Job's events after this are no-ops (deduplicated by Job name), and
        the Job's conditions stay the fallback for a missed pod event and after a restart.

        The pod's log is kept and the Job deleted first, before the outcome frees the Queue's
        capacity: no Queue ever has more unfinished Jobs than its concurrency. The result is
        in hand (the termination message) or in Redis (stored by kflow-run before it exits
        0), so if the outcome cannot be recorded now the attempt's lease lapses and the
        engine completes the node with the stored value.
        """
        name = pod_job_name(pod)
        if name is None or name in self._processed:
            return
        queue_id = QueueId(ident.namespace, ident.queue)
        self._remember(name)
        running = self.running.pop(name, None)
        await self.pod_logs.keep_job(ident, name, failed=False)
        try:
            if not self.keep_finished_jobs:
                await self.api.delete_job(ident.namespace, name)
        except Exception:
            self._processed.pop(name, None)  # the Job is still there: its events try again
            if running is not None:
                self.running[name] = running
            raise
        try:
            if await self._succeeded(ident, name, queue_id, [pod]):
                self.metrics.node_finished(queue_id, "succeeded", _pod_run_seconds(pod))
        except FlowNotFound:
            log.debug("pod %s belongs to a flow no longer in Redis; nothing to record",
                      pod["metadata"]["name"])
        except Exception:
            if self.keep_finished_jobs:  # the Job's Complete event or a resync tries again
                self._processed.pop(name, None)
                if running is not None:
                    self.running[name] = running
            raise  # else the Job is gone: the lapsed lease settles the attempt

    def _remember(self, name: str) -> None:
        self._processed[name] = None
        while len(self._processed) > 50_000:
            self._processed.popitem(last=False)

    # ---- leases and resynchronisation --------------------------------------------------
    async def housekeep(self, queue_id: QueueId) -> None:
        """Renew the leases of this queue's running Jobs, then release the lost ones.

        An active node whose Job vanished (deleted while the operator was down, or never
        created because the operator died between take and create) is not renewed, so its
        lease expires and the engine puts it back to ready.
        """
        await self.ensure_synced()
        attempts = [a for q, a in list(self.running.values()) if q == queue_id]
        if attempts:
            await self.engine.renew(attempts, self.lease_ms)
        released = await self.engine.release_stalled(queue_id)
        if released:
            log.info("queue %s: %d node(s) whose Job vanished went back to ready", queue_id,
                     len(released))
            self.dispatchers.kick(queue_id)

    async def ensure_synced(self) -> None:
        """List every kflow Job once after start-up (or a takeover) and process what it shows."""
        async with self._sync_lock:
            if time.monotonic() - self._synced_at < self.lease_ms / 2000:
                return
            jobs = await self.api.all_kflow_jobs(self.namespaces)
            for job in jobs:
                try:
                    await self.on_job_event(None, job)
                except Exception:
                    log.exception("resync of Job %s failed", job["metadata"]["name"])
            running = [a for q, a in self.running.values()]
            if running:
                await self.engine.renew(running, self.lease_ms)
            self._synced_at = time.monotonic()
            log.log(logging.INFO if jobs else logging.DEBUG,
                    "resync: %d kflow Job(s) seen, %d running", len(jobs), len(running))


def _attempt_of(ident: JobIdentity) -> Attempt:
    return Attempt(flow_uid=ident.flow_uid, namespace=ident.namespace,
                   flow_name=ident.flow_name, node=ident.node, queue=ident.queue,
                   attempt=ident.attempt, token=ident.token, data=None, timeout_ms=None)


def _run_seconds(job: dict[str, Any]) -> float:
    """From the Job's creation to its end (completionTime, or when its Failed condition was
    set; now if neither is there), from the Job's own timestamps: right after a restart too."""
    status = job.get("status") or {}
    end = status.get("completionTime") or next(
        (c.get("lastTransitionTime") for c in status.get("conditions") or []
         if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"), None)
    created = (job.get("metadata") or {}).get("creationTimestamp")
    if not created:
        return 0.0
    return max(0.0, (_timestamp(end) if end else time.time()) - _timestamp(created))


def _pod_run_seconds(pod: dict[str, Any]) -> float:
    """From the pod's creation (right after its Job's) to its main container's end."""
    created = (pod.get("metadata") or {}).get("creationTimestamp")
    ended = (main_state(pod).get("terminated") or {}).get("finishedAt")
    if not created:
        return 0.0
    return max(0.0, (_timestamp(ended) if ended else time.time()) - _timestamp(created))


def _timestamp(value: Any) -> float:
    """A Kubernetes timestamp (RFC 3339 text from a watch, a datetime from a list call)."""
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message", ""))[:500]
    except ValueError:
        return str(exc.body or "")[:500]
