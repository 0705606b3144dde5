"""Pure translation between node attempts and batch/v1 Jobs: build the Job, read its outcome."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from kflow.api.models import API_VERSION
from kflow.api.pods import EXIT_INFRASTRUCTURE
from kflow.engine import EXIT_SUFFIX, Attempt
from kflow.settings import Settings

LABEL_FLOW = "kflow.dev/flow"
LABEL_FLOW_UID = "kflow.dev/flow-uid"
LABEL_NODE = "kflow.dev/node"
LABEL_QUEUE = "kflow.dev/queue"
LABEL_ATTEMPT = "kflow.dev/attempt"
ANNOTATION_NODE = "kflow.dev/node"
ANNOTATION_TOKEN = "kflow.dev/token"
ANNOTATION_QUEUE = "kflow.dev/queue"

# A private CA of Redis, from the pods' Redis Secret, is mounted here in every kflow pod.
REDIS_CA_VOLUME = "kflow-redis-ca"
REDIS_CA_DIR = "/etc/kflow/redis-ca"
REDIS_CA_FILE = "ca.crt"
# Data at most this large travels to any-image pods as the KFLOW_DATA env var.
DATA_ENV_LIMIT = 32 * 1024

_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_NAME_BAD = re.compile(r"[^a-z0-9-]")


def _digest(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def label_value(text: str) -> str:
    """A valid label value for `text`: as is when legal, else cleaned and suffixed by a hash."""
    legal = not _LABEL_BAD.search(text) and text[:1].isalnum() and text[-1:].isalnum()
    if len(text) <= 63 and legal:
        return text
    cleaned = _LABEL_BAD.sub("-", text)[:54].strip("-_.")
    return f"{cleaned}-{_digest(text, 8)}" if cleaned else _digest(text, 8)


def job_name(flow_name: str, node: str, attempt: int, token: str) -> str:
    """The deterministic Job name of one attempt: `<flow>-<hash(node)>-<attempt>-<hash(token)>`.

    The same attempt always maps to the same name, so a retried create gets AlreadyExists
    instead of a second Job; the token part keeps an infrastructure re-dispatch (same attempt
    number, new token) from colliding with the Job it replaces. At most 63 characters, so the
    `job-name` label Kubernetes puts on the pod stays valid.
    """
    suffix = f"-{_digest(node, 8)}-{attempt}-{_digest(token, 4)}"
    base = _NAME_BAD.sub("-", flow_name.lower())[: 63 - len(suffix)].strip("-") or "flow"
    return base + suffix


@dataclass(frozen=True)
class RedisEnv:
    """How pods reach Redis: names of a Secret and its keys, never the values.

    What the pods read back is `kflow.settings.RedisSettings`: the URL and password from the
    Secret, the operator's TLS switch and key prefix, and a private CA (when the Secret holds
    one under `ca_key`) as a file mounted from the Secret.
    """

    secret_name: str = "kflow-redis"
    url_key: str = "url"
    password_key: str = "password"
    username_key: str = "username"
    prefix: str = "kflow"
    tls: bool = False
    ca_key: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisEnv:
        pods = settings.pods
        return cls(secret_name=pods.name, url_key=pods.url_key, password_key=pods.password_key,
                   username_key=pods.username_key,
                   prefix=settings.redis.prefix, tls=settings.redis.tls, ca_key=pods.ca_key)

    def env(self) -> list[dict[str, Any]]:
        """The KFLOW_REDIS_* variables of a pod's container."""
        env: list[dict[str, Any]] = [
            {"name": "KFLOW_REDIS_URL", "valueFrom": {"secretKeyRef": {
                "name": self.secret_name, "key": self.url_key}}},
            {"name": "KFLOW_REDIS_USERNAME", "valueFrom": {"secretKeyRef": {
                "name": self.secret_name, "key": self.username_key, "optional": True}}},
            {"name": "KFLOW_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
                "name": self.secret_name, "key": self.password_key, "optional": True}}},
            {"name": "KFLOW_REDIS_PREFIX", "value": self.prefix},
        ]
        # Only when set, so that a pod template without TLS stays as it always was.
        if self.tls:
            env.append({"name": "KFLOW_REDIS_TLS", "value": "true"})
        if self.ca_key:
            env.append({"name": "KFLOW_REDIS_TLS_CA_FILE",
                        "value": f"{REDIS_CA_DIR}/{REDIS_CA_FILE}"})
        return env

    def mount_ca(self, pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
        """Mount the CA bundle from the Secret where KFLOW_REDIS_TLS_CA_FILE points."""
        if not self.ca_key:
            return
        volume = {"name": REDIS_CA_VOLUME, "secret": {
            "secretName": self.secret_name,
            "items": [{"key": self.ca_key, "path": REDIS_CA_FILE}]}}
        pod_spec["volumes"] = [v for v in pod_spec.get("volumes") or []
                               if v.get("name") != REDIS_CA_VOLUME] + [volume]
        container["volumeMounts"] = [
            m for m in container.get("volumeMounts") or [] if m.get("name") != REDIS_CA_VOLUME
        ] + [{"name": REDIS_CA_VOLUME, "mountPath": REDIS_CA_DIR, "readOnly": True}]


def _pod_env(attempt: Attempt, redis: RedisEnv) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "KFLOW_FLOW_UID", "value": attempt.flow_uid},
        {"name": "KFLOW_FLOW_NAME", "value": attempt.flow_name},
        {"name": "KFLOW_NAMESPACE", "value": attempt.namespace},
        {"name": "KFLOW_NODE", "value": attempt.node},
        {"name": "KFLOW_QUEUE", "value": attempt.queue},
        {"name": "KFLOW_ATTEMPT", "value": str(attempt.attempt)},
        {"name": "KFLOW_TOKEN", "value": attempt.token},
        *redis.env(),
    ]
    if attempt.data is not None:
        encoded = json.dumps(attempt.data, separators=(",", ":"))
        if len(encoded.encode()) <= DATA_ENV_LIMIT:
            env.append({"name": "KFLOW_DATA", "value": encoded})
    return env


def build_job(
    attempt: Attempt,
    *,
    flow_uid: str,
    template: dict[str, Any],
    redis: RedisEnv,
) -> dict[str, Any]:
    """The batch/v1 Job that runs one attempt, from the Queue's pod template.

    kflow owns retries (backoffLimit 0), the timeout becomes activeDeadlineSeconds, and the
    Flow owns the Job so that deleting the Flow garbage-collects it.
    """
    name = job_name(attempt.flow_name, attempt.node, attempt.attempt, attempt.token)
    labels = {
        LABEL_FLOW: label_value(attempt.flow_name),
        LABEL_FLOW_UID: flow_uid,
        LABEL_NODE: label_value(attempt.node),
        LABEL_QUEUE: label_value(attempt.queue),
        LABEL_ATTEMPT: str(attempt.attempt),
    }
    annotations = {ANNOTATION_NODE: attempt.node, ANNOTATION_TOKEN: attempt.token,
                   ANNOTATION_QUEUE: attempt.queue}

    pod_template = copy.deepcopy(template or {})
    pod_meta = pod_template.setdefault("metadata", {}) or {}
    pod_template["metadata"] = pod_meta
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}), **annotations}
    pod_spec = pod_template.setdefault("spec", {})
    # Never restart in place: a new attempt is a new Job, decided by the engine.
    pod_spec["restartPolicy"] = "Never"
    containers = pod_spec.get("containers") or []
    if containers:
        main = next((c for c in containers if c.get("name") == "main"), containers[0])
        own = _pod_env(attempt, redis)
        own_names = {e["name"] for e in own}
        main["env"] = [e for e in (main.get("env") or []) if e.get("name") not in own_names]
        main["env"].extend(own)
        redis.mount_ca(pod_spec, main)

    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        "template": pod_template,
    }
    if attempt.timeout_ms:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(attempt.timeout_ms / 1000))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": attempt.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": API_VERSION,
                "kind": "Flow",
                "name": attempt.flow_name,
                # An exit handler's Job (flow uid `<uid>.exit`) is owned by the Flow too.
                "uid": flow_uid.removesuffix(EXIT_SUFFIX),
                "controller": True,
                "blockOwnerDeletion": True,
            }],
        },
        "spec": spec,
    }


@dataclass(frozen=True)
class JobIdentity:
    """Which attempt a Job runs, read back from its labels and annotations."""

    flow_uid: str
    flow_name: str
    namespace: str
    node: str
    queue: str
    attempt: int
    token: str


def job_identity(job: dict[str, Any]) -> JobIdentity | None:
    """The attempt a Job object belongs to, or None for a Job kflow did not make."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    token = annotations.get(ANNOTATION_TOKEN)
    uid = labels.get(LABEL_FLOW_UID)
    node = annotations.get(ANNOTATION_NODE)
    if not (token and uid and node):
        return None
    flow_name = next((ref.get("name") for ref in meta.get("ownerReferences") or []
                      if ref.get("kind") == "Flow"), labels.get(LABEL_FLOW, ""))
    try:
        attempt = int(labels.get(LABEL_ATTEMPT, "0"))
    except ValueError:
        attempt = 0
    return JobIdentity(
        flow_uid=uid, flow_name=flow_name, namespace=meta.get("namespace", ""), node=node,
        queue=annotations.get(ANNOTATION_QUEUE) or labels.get(LABEL_QUEUE, ""),
        attempt=attempt, token=token,
    )


def job_state(job: dict[str, Any]) -> str:
    """'succeeded', 'failed' or 'running', from the Job's terminal conditions."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "succeeded"
        if cond.get("type") == "Failed":
            return "failed"
    return "running"


def _failed_condition(job: dict[str, Any]) -> dict[str, Any]:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return dict(cond)
    return {}


@dataclass(frozen=True)
class JobFailure:
    """Why an attempt's Job failed, and whether the attempt should count."""

    error: str
    infrastructure: bool  # evicted, deleted, node lost: retried without spending an attempt


def _main_status(pod: dict[str, Any]) -> dict[str, Any]:
    """The container status of the pod's main container ("main", else the first, as
    build_job picks), or {} before it has one."""
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    main_name = "main" if "main" in names else (names[0] if names else None)
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if main_name is None or status.get("name") == main_name:
            return dict(status)
    return {}


def _main_terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    status = _main_status(pod)
    terminated = (status.get("state") or {}).get("terminated")
    if terminated:
        return dict(terminated)
    last = (status.get("lastState") or {}).get("terminated")
    return dict(last) if last else None


def _disrupted(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    if status.get("reason") in {"Evicted", "NodeLost", "Preempting", "Shutdown", "NodeShutdown",
                                "Terminated", "UnexpectedAdmissionError", "OutOfcpu",
                                "OutOfmemory"}:
        return f"pod {status.get('reason')}: {status.get('message', '')}".strip()
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return f"pod disrupted ({cond.get('reason')}): {cond.get('message', '')}".strip()
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "pod was deleted while running"
    return None


def classify_failure(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobFailure:
    """The error of a failed Job and whether infrastructure, not the code, caused it."""
    cond = _failed_condition(job)
    if cond.get("reason") == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        return JobFailure(f"timed out after {deadline}s (activeDeadlineSeconds)", False)
    if not pods:
        return JobFailure("the Job's pod disappeared before it finished (deleted or node lost)",
                          True)
    # The last pod is the one that decided the Job.
    pod = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""))[-1]
    disruption = _disrupted(pod)
    if disruption:
        return JobFailure(disruption, True)
    terminated = _main_terminated(pod)
    if terminated is None:
        reason = (pod.get("status") or {}).get("reason") or cond.get("reason") or "unknown"
        message = (pod.get("status") or {}).get("message") or cond.get("message") or ""
        return JobFailure(f"pod failed before its container ran: {reason} {message}".strip(),
                          False)
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or "Error"
    message = (terminated.get("message") or "").strip()
    text = f"exit code {code} ({reason})"
    # kflow-run could not reach Redis to start or to record the result: not the code's fault.
    infrastructure = code == EXIT_INFRASTRUCTURE
    return JobFailure(f"{text}: {message}" if message else text, infrastructure)


def pod_job_name(pod: dict[str, Any]) -> str | None:
    """The name of the Job that made the pod (the label the Job controller puts on it)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    return str(name) if name else None


def pod_succeeded(pod: dict[str, Any]) -> bool:
    """Whether the pod says its attempt succeeded: phase Succeeded, or its main container
    ended with exit code 0 (kflow-run exits 0 only once the result is stored).

    The pod's own status says so about two seconds before the Job controller marks the Job
    Complete, and even when another container of the pod keeps it running. A failed pod, or
    one being deleted that has not succeeded, is left to the Job's conditions, which decide
    failures (`classify_failure`).
    """
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase in ("Succeeded", "Failed"):
        return bool(phase == "Succeeded")
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    terminated = main_state(pod).get("terminated") or {}
    return bool(terminated) and terminated.get("exitCode") == 0


def main_state(pod: dict[str, Any]) -> dict[str, Any]:
    """The current state of the pod's main container: {"terminated": {...}}, {"running": ...},
    {"waiting": ...}, or {} before it has one."""
    return dict(_main_status(pod).get("state") or {})


def termination_output(pods: list[dict[str, Any]]) -> tuple[bool, Any]:
    """(found, value) from the main container's termination message of a succeeded pod.

    JSON is decoded; any other text is kept as a string. Empty means no output was written.
    """
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""),
                      reverse=True):
        terminated = _main_terminated(pod)
        if not terminated or terminated.get("exitCode") not in (0, None):
            continue
        message = (terminated.get("message") or "").strip()
        if not message:
            return False, None
        try:
            return True, json.loads(message)
        except ValueError:
            return True, message
    return False, None


# Waiting reasons of a container that will not start by itself soon; reported on the Flow.
STUCK_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "ErrImagePull",
                           "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
# Of those, the ones no retry of the same pod can fix: the attempt fails at once.
FATAL_REASONS = frozenset({"InvalidImageName", "ErrImageNeverPull"})


def stuck_reason(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a container of the pod is stuck before starting."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return str(waiting["reason"]), str(waiting.get("message") or "")
    return None
