"""Whether a Flow's graph may be recorded in Redis: exactly once, whatever Redis has lost.

Redis is the only place that knows which nodes ran; when its state for a flow is gone (keys
expired after `ttlSecondsAfterFinished` while the Flow object stayed, a Redis without
persistence restarted, a FLUSHALL), recording the graph again would run every node again: a
payment node would charge twice. So the Flow object itself says what happened to it:

- `status.recordedAt` is written after the graph is in Redis and before any node can start
  (the graph is recorded held, like a suspended flow, and released once the mark is stored);
- `status.phase` keeps the last phase reported (a finished flow keeps its Succeeded/Failed);
- `status.total` exists only once a snapshot from Redis was reported (flows recorded by a
  kflow without `recordedAt` carry it too).

From those and "does Redis have the flow" the operator decides, once per start, what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from kflow.api.models import ANNOTATION_RETRY
from kflow.api.states import TERMINAL_PHASES

# The Flow condition set while its state is lost; the message says how to start over.
CONDITION_STATE_LOST = "StateLost"


class Recording(StrEnum):
    """What admitting a Flow does with Redis."""

    # Never recorded: record it held, mark `recordedAt`, then release it.
    FRESH = "fresh"
    # In Redis but the Flow has no `recordedAt` (the operator stopped between recording and
    # marking, or a flow from before the mark existed): mark it, then release it.
    MARK = "mark"
    # Recorded and in Redis: carry on (finish an interrupted add, re-queue what is ready).
    RESUME = "resume"
    # Finished, and Redis no longer has it: keep the status as it is, run nothing, delete the
    # Flow ttlSecondsAfterFinished after its own finishedAt.
    EXPIRED = "expired"
    # Recorded, not finished, and Redis no longer has it: run nothing until the user asks to
    # start over (the retry annotation), since nodes that already ran would run again.
    LOST = "lost"


def was_recorded(status: Mapping[str, Any]) -> bool:
    """True when the Flow says its graph was in Redis at some point."""
    return bool(status.get("recordedAt")) or status.get("total") is not None


def finished(status: Mapping[str, Any]) -> bool:
    """A terminal phase reached by running (not an invalid spec, which never ran)."""
    valid: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Valid"), {})
    return status.get("phase") in TERMINAL_PHASES and valid.get("status") != "False"


def decide(status: Mapping[str, Any], in_redis: bool) -> Recording:
    """What to do with a valid Flow whose status is `status`, Redis holding it or not."""
    if in_redis:
        return Recording.RESUME if status.get("recordedAt") else Recording.MARK
    if finished(status):
        return Recording.EXPIRED
    if was_recorded(status):
        return Recording.LOST
    return Recording.FRESH


def lost_message(namespace: str, name: str, recorded_at: str | None) -> str:
    when = f" (recorded at {recorded_at})" if recorded_at else ""
    return (f"Redis no longer holds the state of Flow {namespace}/{name}{when}: its data was "
            "lost or its keys removed before the flow finished. No node runs again on its own, "
            "since nodes that already ran would run twice. To start the whole flow over: "
            f"kubectl -n {namespace} annotate flow {name} {ANNOTATION_RETRY}=\"$(date +%s)\" "
            "--overwrite")
