"""The operator process: builds its parts from the settings, starts and stops them.

Each concern is a module of its own, and the kopf handlers call them directly: flows.py (a
Flow's lifecycle), queues.py (Queue objects and their loops), pools.py (worker Deployments),
executor.py (Jobs), cronflows.py (CronFlow schedules), events.py (Kubernetes Events),
status.py (Flow and Queue status), metrics.py. This module only wires them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kflow.engine import Engine
from kflow.kube.cronflows import CronClock, CronFlowControl
from kflow.kube.dispatch import Dispatchers, FlowRoutes
from kflow.kube.events import EventPoster
from kflow.kube.executor import JobExecutor
from kflow.kube.flows import FlowLifecycle
from kflow.kube.jobs import RedisEnv
from kflow.kube.k8s import KubeApi
from kflow.kube.metrics import Metrics
from kflow.kube.notify import Notifier
from kflow.kube.pools import WorkerPools
from kflow.kube.queues import QueueControl
from kflow.kube.redis_health import report_persistence
from kflow.kube.status import QueueStatus
from kflow.kube.templates import TemplateControl
from kflow.kube.tenants import SecretLayout, Tenants
from kflow.settings import Settings
from kflow.store.connect import connect_to
from kflow.store.durability import read_durability

log = logging.getLogger("kflow.kube")


class Runtime:
    """Everything one operator process holds; the handlers reach its parts through it."""

    def __init__(self, settings: Settings, engine: Engine, api: KubeApi,
                 redis_client: Any = None) -> None:
        self.settings = settings
        self.engine = engine
        self.api = api
        self.redis_client = redis_client
        self.identity = settings.peering.identity or f"{socket.gethostname()}-{os.getpid()}"
        dispatch = settings.dispatch
        self.metrics = Metrics()
        engine.store.scripts.observe(self.metrics.script_ran)
        self.dispatchers = Dispatchers(engine, identity=self.identity, batch=dispatch.take_batch,
                                       lease_ms=dispatch.lease_ms,
                                       idle_recheck=dispatch.idle_recheck_seconds)
        routes = FlowRoutes()
        self.events = events = EventPoster(api, identity=self.identity)
        redis_env = RedisEnv.from_settings(settings)
        self.flows = FlowLifecycle(engine=engine, api=api, dispatchers=self.dispatchers,
                                   routes=routes, events=events, metrics=self.metrics,
                                   settings=settings.status,
                                   notifier=Notifier(api, events, settings.notify))
        self.executor = JobExecutor(engine=engine, api=api, dispatchers=self.dispatchers,
                                    routes=routes, events=events, marks=self.flows.status,
                                    metrics=self.metrics, redis_env=redis_env,
                                    settings=dispatch, namespaces=settings.watching.namespaces)
        queue_status = QueueStatus(api, self.metrics)
        pools = WorkerPools(engine=engine, api=api, dispatchers=self.dispatchers,
                            flows=self.flows, status=queue_status, metrics=self.metrics,
                            redis_env=redis_env, events=events)
        self.queues = QueueControl(engine=engine, dispatchers=self.dispatchers,
                                   executor=self.executor, flows=self.flows, pools=pools,
                                   status=queue_status, metrics=self.metrics,
                                   max_stalled=dispatch.max_stalled,
                                   pod_policy=settings.policy, events=events)
        self.templates = TemplateControl(api, events, self.flows)
        self.cronflows = CronFlowControl(api, events, CronClock(settings.cron.time_scale))
        self.tenants = self._tenants(settings, redis_client) if settings.tenants.enabled else None
        self._tasks: list[asyncio.Task[Any]] = []

    def _tenants(self, settings: Settings, redis_client: Any) -> Tenants:
        pods, redis = settings.pods, settings.redis
        ca_pem = None
        if pods.ca_key and redis.tls_ca_file:
            with open(redis.tls_ca_file, encoding="utf-8") as ca:
                ca_pem = ca.read()
        return Tenants(
            redis_client if redis_client is not None else self.engine.store.redis, self.api,
            prefix=redis.prefix, url=settings.tenants.pod_url or redis.url,
            layout=SecretLayout(pods.name, pods.url_key, pods.username_key, pods.password_key,
                                pods.ca_key),
            warn=lambda involved, reason, message: self.events.post_on(
                involved, reason=reason, message=message, warning=True),
            ca_pem=ca_pem)

    async def ensure_tenant(self, namespace: str, involved: dict[str, Any]) -> None:
        """With tenants on: the namespace's Redis user and pods Secret, before its pods."""
        if self.tenants is not None:
            await self.tenants.ensure(namespace, involved)

    @classmethod
    async def from_settings(cls, settings: Settings) -> Runtime:
        from kflow.kube.k8s import load_config

        load_config()
        client = await connect_to(settings.redis)
        runtime = cls(settings, Engine(client, prefix=settings.redis.prefix), KubeApi(), client)
        if runtime.tenants is not None:
            await runtime.tenants.check_admin()
        # The scripts' function library, before any tenant needs it (a tenant may call it
        # but not load it). Loaded again on demand whenever the server lost it.
        try:
            await runtime.engine.store.scripts.load()
        except Exception as exc:  # scripts go by EVALSHA meanwhile
            log.warning("could not load kflow's function library into Redis: %s", exc)
        return runtime

    def start(self) -> None:
        # The sync Kubernetes client runs in threads; asyncio's default pool (cores + 4) would
        # serialise a burst of Job creations on a small machine.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="kflow-kube"))
        self._tasks.append(asyncio.create_task(self.flows.status.run(), name="kflow-status"))
        if self.settings.metrics.port:
            self._tasks.append(asyncio.create_task(
                self.metrics.serve(self.settings.metrics.port), name="kflow-metrics"))
        if self.tenants is not None:
            self._tasks.append(asyncio.create_task(self.tenants.reapply_forever(),
                                                   name="kflow-tenants"))
        if self.redis_client is not None:
            self._tasks.append(asyncio.create_task(self.report_redis_persistence(),
                                                   name="kflow-redis-persistence"))

    async def report_redis_persistence(self) -> str | None:
        """Warn (log, metric, Event on the operator's Deployment) when Redis keeps nothing
        across a restart; the warning text, or None. Eviction was refused before start
        (kflow.kube.main)."""
        try:
            readings = await read_durability(self.redis_client)
        except Exception as exc:
            log.warning("could not read Redis's persistence settings: %s", exc)
            return None
        return await report_persistence(readings, metrics=self.metrics, events=self.events,
                                        api=self.api, pod=self.settings.operator_pod)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.flows.notifier is not None:
            await self.flows.notifier.close()
        if self.redis_client is not None:
            await self.redis_client.aclose()
