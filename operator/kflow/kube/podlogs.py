"""Node logs that outlive pods: the tail of each attempt's container log, read from the API
server before the attempt's Job is deleted and kept in Redis with the flow (per attempt).

A pod that never started its container has no log: what `kubectl describe` would say about
it (the waiting reason and message) is kept instead. Worker pools have no per-node container
log (a worker pod serves many nodes): only Jobs' pods are read here.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from kflow.api.ids import FlowId
from kflow.kube.jobs import JobIdentity

log = logging.getLogger("kflow.kube.podlogs")

# The first tail asked for is KFLOW_POD_LOG_BYTES / 16 lines (4096 for 64 KiB), downloading
# at most 4x the bound; a tail of longer lines that hits that is asked again for half as many
# lines, down to 1 (at most 13 requests for 64 KiB, each bounded by the API server's
# limitBytes), so what is kept is the end of the log and as many lines as fit.
BYTES_PER_LINE = 16
DOWNLOAD_FACTOR = 4
FEWER_LINES = 2
CUT_NOTE = "[kflow: the earlier part of this log was not kept]\n"


class PodLogApi(Protocol):
    async def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]: ...

    async def read_pod_log(self, namespace: str, pod: str, container: str, *, tail_lines: int,
                           limit_bytes: int) -> bytes | None: ...


class PodLogStore(Protocol):
    async def keep_pod_log(self, flow_id: FlowId, node: str, attempt: int, text: str, *,
                           failed: bool, flow_budget: int) -> bool: ...


def latest_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod that decided the Job: the last one made."""
    if not pods:
        return None
    return sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""))[-1]


def main_container(pod: dict[str, Any]) -> str | None:
    """The container kflow runs the node in: "main", else the first (as build_job picks)."""
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    if "main" in names:
        return "main"
    return str(names[0]) if names and names[0] else None


def never_started(pod: dict[str, Any]) -> str | None:
    """Why the pod's main container never ran (what `kubectl describe` shows: its waiting
    reason and message, or why the pod was not scheduled); None once it has run."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    main = main_container(pod)
    for container in status.get("containerStatuses") or []:
        if container.get("name") != main:
            continue
        state = container.get("state") or {}
        if state.get("running") or state.get("terminated") or \
                (container.get("lastState") or {}).get("terminated"):
            return None
        waiting = state.get("waiting") or {}
        if waiting:
            return _said(name, waiting.get("reason") or "Waiting", waiting.get("message"))
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return _said(name, condition.get("reason") or "Unschedulable",
                         condition.get("message"))
    return _said(name, status.get("reason") or status.get("phase") or "Pending",
                 status.get("message"))


def _said(pod: str, reason: str, message: str | None) -> str:
    text = f"pod {pod} never started its container: {reason}"
    return (f"{text}: {message}" if message else text)[:2000] + "\n"


def tail_text(raw: bytes, limit: int, *, cut: bool) -> str:
    """The last `limit` bytes of a log as text (UTF-8, never split inside a character), opened
    by a note when earlier output is missing (`cut`, or more than `limit` bytes)."""
    if not cut and len(raw) <= limit:
        return raw.decode("utf-8", "replace")
    keep = max(0, limit - len(CUT_NOTE.encode()))
    data = raw.decode("utf-8", "replace").encode()[-keep:] if keep else b""
    # Drop the continuation bytes of a character whose start was cut off.
    start = 0
    while start < len(data) and start < 3 and 0x80 <= data[start] < 0xC0:
        start += 1
    return CUT_NOTE + data[start:].decode("utf-8", "replace")


class PodLogKeeper:
    """Reads an attempt's log tail (bounded at the API server) and keeps it with the flow.

    It never stands in the way of the outcome: a log that cannot be read or kept is reported
    in the operator's log and the Job is deleted as always.
    """

    def __init__(self, *, api: PodLogApi, store: PodLogStore, attempt_bytes: int,
                 flow_bytes: int) -> None:
        self.api = api
        self.store = store
        self.attempt_bytes = attempt_bytes  # 0: off
        self.flow_bytes = flow_bytes

    async def keep_job(self, ident: JobIdentity, job_name: str, *, failed: bool) -> None:
        """Keep the log of the finished Job's pod (or why it never started)."""
        if not self.attempt_bytes:
            return
        try:
            pod = latest_pod(await self.api.job_pods(ident.namespace, job_name))
            if pod is None:
                return
            text = never_started(pod)
            if text is None:
                text = await self.read_tail(ident.namespace, pod)
            if text is not None:
                await self._keep(ident, text, failed=failed)
        except Exception as exc:  # a log is never worth an outcome or a Job left behind
            log.warning("Flow %s/%s node %s: the log of attempt %d was not kept: %s",
                        ident.namespace, ident.flow_name, ident.node, ident.attempt, exc)

    async def keep_stuck(self, ident: JobIdentity, pod: dict[str, Any]) -> None:
        """Keep why a pod that will never start did not (its attempt failed without a log)."""
        if not self.attempt_bytes:
            return
        text = never_started(pod)
        if text is None:
            return
        try:
            await self._keep(ident, text[:self.attempt_bytes], failed=True)
        except Exception as exc:
            log.warning("Flow %s/%s node %s: why attempt %d never started was not kept: %s",
                        ident.namespace, ident.flow_name, ident.node, ident.attempt, exc)

    async def read_tail(self, namespace: str, pod: dict[str, Any]) -> str | None:
        """The last `attempt_bytes` of the pod's main container log; None when there is none.

        The API server's limitBytes keeps the head of what it sends, so the tail is asked for
        by lines (tailLines) with limitBytes as the download bound; a tail that hit the bound
        (long lines) is asked again for fewer lines, so its end is never the part cut off.
        """
        container = main_container(pod)
        if container is None:
            return None
        name = pod["metadata"]["name"]
        lines = max(1, self.attempt_bytes // BYTES_PER_LINE)
        limit = self.attempt_bytes * DOWNLOAD_FACTOR
        while True:
            raw = await self.api.read_pod_log(namespace, name, container, tail_lines=lines,
                                              limit_bytes=limit)
            if raw is None:
                return None
            if len(raw) < limit or lines == 1:
                break
            lines = max(1, lines // FEWER_LINES)
        # As many lines as asked for, or the download bound reached: earlier output exists.
        cut = len(raw) >= limit or raw.count(b"\n") >= lines
        return tail_text(raw, self.attempt_bytes, cut=cut)

    async def _keep(self, ident: JobIdentity, text: str, *, failed: bool) -> None:
        kept = await self.store.keep_pod_log(FlowId.of(ident.namespace, ident.flow_uid),
                                             ident.node, ident.attempt, text, failed=failed,
                                             flow_budget=self.flow_bytes)
        if not kept:
            log.debug("Flow %s/%s node %s: the log of attempt %d was not kept (the flow's "
                      "KFLOW_POD_LOG_FLOW_BYTES budget is used up, or the flow is gone)",
                      ident.namespace, ident.flow_name, ident.node, ident.attempt)
