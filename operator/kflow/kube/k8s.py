"""Async calls to the Kubernetes API: the sync client's calls, each run in a worker thread."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kflow.api.cron import LABEL_CRONFLOW
from kflow.api.models import GROUP, VERSION
from kflow.kube.jobs import LABEL_FLOW_UID

log = logging.getLogger("kflow.kube")

# Every call to the API server gives up after these (connect, read) seconds instead of
# waiting as long as the OS does (a cut connection: about 2 h). The read bound is well above
# what a list of every kflow Job takes.
API_TIMEOUT_S: tuple[float, float] = (10.0, 60.0)


def load_config() -> None:
    """In-cluster service account when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class KubeApi:
    """The handful of API calls the operator makes, async; objects are plain dicts."""

    def __init__(self, *, configuration: client.Configuration | None = None,
                 timeout: tuple[float, float] = API_TIMEOUT_S) -> None:
        api_client = client.ApiClient(configuration)
        self.timeout = timeout
        # The sync client pools one connection per thread it is used from; allow a crowd.
        api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        self._api = api_client
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._authn = client.AuthenticationV1Api(api_client)
        self._authz = client.AuthorizationV1Api(api_client)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # Raw JSON, not the client's model objects: cheaper, and dicts like kopf's bodies.
        def call() -> Any:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout,
                          **kwargs)
            data = response.data
            return json.loads(data) if data else None

        return await asyncio.to_thread(call)

    async def _unless(self, status: int, fn: Any, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """`_call`, except that the API server answering `status` (404: not there, 409: one
        of that name exists) is an expected outcome: (False, None). Else (True, the reply)."""
        try:
            return True, await self._call(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status == status:
                return False, None
            raise

    async def create_job(self, namespace: str, job: dict[str, Any]) -> bool:
        """Create the Job; False when a Job of that name already exists (a retried create)."""
        created, _ = await self._unless(409, self._batch.create_namespaced_job, namespace, job)
        return created

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its pods; a Job already gone is fine."""
        await self._unless(404, self._batch.delete_namespaced_job, name, namespace,
                           body={"propagationPolicy": "Background"})

    async def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        result = await self._call(self._core.list_namespaced_pod, namespace,
                                  label_selector=f"job-name={job_name}")
        return list(result.get("items") or [])

    async def read_pod_log(self, namespace: str, pod: str, container: str, *, tail_lines: int,
                           limit_bytes: int) -> bytes | None:
        """The last `tail_lines` lines of a container's log, cut by the API server after
        `limit_bytes` (so a huge log is never downloaded); None when the pod is gone (404) or
        its container never started (400: no log to read)."""
        def call() -> bytes | None:
            try:
                response: Any = self._core.read_namespaced_pod_log(
                    pod, namespace, container=container, tail_lines=tail_lines,
                    limit_bytes=limit_bytes, _preload_content=False,
                    _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status in (400, 404):
                    return None
                raise
            return bytes(response.data or b"")

        return await asyncio.to_thread(call)

    async def flow_jobs(self, namespace: str, flow_uid: str) -> list[dict[str, Any]]:
        result = await self._call(self._batch.list_namespaced_job, namespace,
                                  label_selector=f"{LABEL_FLOW_UID}={flow_uid}")
        return list(result.get("items") or [])

    async def all_kflow_jobs(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """Every Job kflow made, in the watched namespaces (all when empty)."""
        if not namespaces:
            result = await self._call(self._batch.list_job_for_all_namespaces,
                                      label_selector=LABEL_FLOW_UID)
            return list(result.get("items") or [])
        jobs: list[dict[str, Any]] = []
        for namespace in namespaces:
            result = await self._call(self._batch.list_namespaced_job, namespace,
                                      label_selector=LABEL_FLOW_UID)
            jobs.extend(result.get("items") or [])
        return jobs

    async def patch_flow_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch the Flow's status; False if the Flow is gone."""
        patched, _ = await self._unless(404, self._custom.patch_namespaced_custom_object_status,
                                        GROUP, VERSION, namespace, "flows", name,
                                        {"status": status})
        return patched

    async def delete_flow(self, namespace: str, name: str) -> None:
        await self._unless(404, self._custom.delete_namespaced_custom_object, GROUP, VERSION,
                           namespace, "flows", name)

    async def create_event(self, involved: dict[str, Any], *, type: str, reason: str,
                           message: str, component: str, instance: str, count: int,
                           first: str, last: str) -> str:
        """Record a core/v1 Event on an object (shown by `kubectl describe` and `get events`);
        returns its name, for `patch_event`."""
        namespace = involved["namespace"]
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{involved['name'][:200]}.{uuid.uuid4().hex[:12]}",
                         "namespace": namespace},
            "involvedObject": involved,
            "type": type, "reason": reason, "message": message[:1024],
            "firstTimestamp": first, "lastTimestamp": last, "count": count,
            "source": {"component": component},
            "reportingComponent": component, "reportingInstance": instance[:128],
        }
        await self._call(self._core.create_namespaced_event, namespace, event)
        return str(event["metadata"]["name"])  # type: ignore[index]

    async def patch_event(self, namespace: str, name: str, *, count: int, last: str,
                          message: str) -> bool:
        """Raise an Event's count (the same Event again); False when it is gone (expired)."""
        patched, _ = await self._unless(404, self._core.patch_namespaced_event, name, namespace,
                                        {"count": count, "lastTimestamp": last,
                                         "message": message[:1024]})
        return patched

    async def patch_queue_status(self, namespace: str, name: str,
                                 status: dict[str, Any]) -> None:
        await self._unless(404, self._custom.patch_namespaced_custom_object_status, GROUP,
                           VERSION, namespace, "queues", name, {"status": status})

    # ---- FlowTemplates (kflow.kube.templates) ---------------------------------------------
    async def read_flowtemplate(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The FlowTemplate; None when there is none of that name."""
        _, found = await self._unless(404, self._custom.get_namespaced_custom_object, GROUP,
                                      VERSION, namespace, "flowtemplates", name)
        return found  # type: ignore[no-any-return]

    async def patch_flowtemplate_status(self, namespace: str, name: str,
                                        status: dict[str, Any]) -> bool:
        """Merge-patch the FlowTemplate's status; False if it is gone."""
        patched, _ = await self._unless(404, self._custom.patch_namespaced_custom_object_status,
                                        GROUP, VERSION, namespace, "flowtemplates", name,
                                        {"status": status})
        return patched

    # ---- the operator's own pod and its owners (kflow.kube.redis_health) ---------------------
    async def read_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A Pod, ReplicaSet or Deployment by name; None when it does not exist."""
        read = {"Pod": self._core.read_namespaced_pod,
                "ReplicaSet": self._apps.read_namespaced_replica_set,
                "Deployment": self._apps.read_namespaced_deployment}[kind]
        _, found = await self._unless(404, read, name, namespace)
        return found  # type: ignore[no-any-return]

    # ---- worker Deployments (kflow.kube.scaler.PoolApi) -----------------------------------
    async def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        _, found = await self._unless(404, self._apps.read_namespaced_deployment, name,
                                      namespace)
        return found  # type: ignore[no-any-return]

    async def create_deployment(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create the Deployment; False when one of that name already exists."""
        created, _ = await self._unless(409, self._apps.create_namespaced_deployment,
                                        namespace, body)
        return created

    async def replace_deployment(self, namespace: str, name: str,
                                 body: dict[str, Any]) -> None:
        await self._call(self._apps.replace_namespaced_deployment, name, namespace, body)

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        await self._call(self._apps.patch_namespaced_deployment_scale, name, namespace,
                         {"spec": {"replicas": replicas}})

    async def delete_deployment(self, namespace: str, name: str) -> None:
        """Delete a Deployment and its pods; one already gone is fine."""
        await self._unless(404, self._apps.delete_namespaced_deployment, name, namespace,
                           body={"propagationPolicy": "Background"})

    # ---- namespaces' pods Secrets (kflow.kube.tenants.SecretApi) ------------------------
    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        _, found = await self._unless(404, self._core.read_namespaced_secret, name, namespace)
        return found  # type: ignore[no-any-return]

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create the Secret; False when one of that name already exists."""
        created, _ = await self._unless(409, self._core.create_namespaced_secret, namespace,
                                        body)
        return created

    async def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        await self._call(self._core.replace_namespaced_secret, name, namespace, body)

    # ---- the kflow API (kflow.server): who calls, what RBAC lets them, their Flows ----------
    async def review_token(self, token: str) -> dict[str, Any]:
        """The API server's TokenReview of a bearer token: its `status` (authenticated, user
        with username, uid, groups, extra; error)."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": {"token": token}}
        reply = await self._call(self._authn.create_token_review, review)
        return dict(reply.get("status") or {})

    async def review_access(self, *, user: str, groups: list[str], uid: str | None,
                            extra: dict[str, list[str]], verb: str, namespace: str,
                            resource: str, group: str = GROUP) -> tuple[bool, str]:
        """A SubjectAccessReview: may this user do `verb` on `resource` in `namespace`?
        -> (allowed, the authorizer's reason)."""
        spec: dict[str, Any] = {
            "user": user, "groups": groups, "extra": extra,
            "resourceAttributes": {"group": group, "resource": resource, "verb": verb,
                                   "namespace": namespace}}
        if uid:
            spec["uid"] = uid
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": spec}
        reply = await self._call(self._authz.create_subject_access_review, review)
        status = reply.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or "")

    async def list_flows(self, namespace: str, *, limit: int, cont: str | None
                         ) -> dict[str, Any]:
        """One page of the namespace's Flows, paged by the API server (limit / continue)."""
        kwargs: dict[str, Any] = {"limit": limit}
        if cont:
            kwargs["_continue"] = cont
        return await self._call(self._custom.list_namespaced_custom_object,  # type: ignore[no-any-return]
                                GROUP, VERSION, namespace, "flows", **kwargs)

    async def read_flow(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Flow object; None when there is none of that name."""
        _, found = await self._unless(404, self._custom.get_namespaced_custom_object, GROUP,
                                      VERSION, namespace, "flows", name)
        return found  # type: ignore[no-any-return]

    async def patch_flow(self, namespace: str, name: str, patch: dict[str, Any]
                         ) -> dict[str, Any] | None:
        """Merge-patch the Flow (spec or metadata); None when it is gone."""
        _, patched = await self._unless(404, self._custom.patch_namespaced_custom_object,
                                        GROUP, VERSION, namespace, "flows", name, patch)
        return patched  # type: ignore[no-any-return]

    async def remove_flow(self, namespace: str, name: str) -> bool:
        """Delete the Flow (its finalizer lets the operator clean up); False when it is gone."""
        deleted, _ = await self._unless(404, self._custom.delete_namespaced_custom_object,
                                        GROUP, VERSION, namespace, "flows", name)
        return deleted

    # ---- CronFlows and their Flows (kflow.kube.cronflows.CronApi) -----------------------
    async def list_cronflow_flows(self, namespace: str, cronflow: str) -> list[dict[str, Any]]:
        """The Flows a CronFlow started (its label), every page."""
        flows: list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": f"{LABEL_CRONFLOW}={cronflow}",
                                      "limit": 500}
            if cont:
                kwargs["_continue"] = cont
            page = await self._call(self._custom.list_namespaced_custom_object, GROUP, VERSION,
                                    namespace, "flows", **kwargs)
            flows.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return flows

    async def create_flow(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create the Flow; False when one of that name already exists."""
        created, _ = await self._unless(409, self._custom.create_namespaced_custom_object,
                                        GROUP, VERSION, namespace, "flows", body)
        return created

    async def patch_cronflow_status(self, namespace: str, name: str,
                                    status: dict[str, Any]) -> bool:
        """Merge-patch the CronFlow's status; False if the CronFlow is gone."""
        patched, _ = await self._unless(404, self._custom.patch_namespaced_custom_object_status,
                                        GROUP, VERSION, namespace, "cronflows", name,
                                        {"status": status})
        return patched
