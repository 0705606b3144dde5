"""The runs of one Flow object: a changed spec (`spec.changePolicy` Queue or Restart) starts a new
run of the new spec in the same Flow, and the status keeps a bounded history of the earlier ones.

Which run is in Redis is told by `status.specDigest`, the digest of the run-shaping fields of
the spec the current run executes (kflow.api.models.RUN_FIELDS). A spec whose digest differs is
a change. The switch keeps the exactly-once rule of kflow.kube.recording:

1. the old run ends (Restart cancels it; Queue waits for it);
2. its keys and Jobs are deleted from Redis and the cluster;
3. the status is reset for the new run in one patch: the old run goes into `status.runs`,
   `recordedAt`, `total` and `specDigest` are cleared;
4. the new graph is recorded held, `recordedAt` and `specDigest` are stored, it is released.

An operator stopped anywhere in between finds its way on: before 3 the digest still differs
(the switch is done again; deleting keys that are gone is a no-op); after 3 the Flow is an
unrecorded one (recording.Recording.FRESH), or a recorded-but-unmarked one (MARK) whose keys can
only be the new run's, since the old ones went before the status said so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kflow.api.models import MAX_RUNS_KEPT, RUN_FIELDS

# The status fields of a run; cleared when a new run starts (a merge patch removes a null).
RUN_STATUS_FIELDS = ("phase", "total", "counts", "progress", "startedAt", "finishedAt",
                     "duration", "recordedAt", "notification", "specDigest", "template",
                     "exitHandlers")


def spec_digest(spec: Mapping[str, Any]) -> str:
    """Digest of what a run runs: the same spec gives the same digest, whatever the key order."""
    shaping = {key: spec[key] for key in RUN_FIELDS if spec.get(key) is not None}
    text = json.dumps(shaping, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def changed(status: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Whether `spec` differs from the spec the recorded run executes (False before a run was
    recorded with a digest: a flow of an older kflow could not change its spec)."""
    digest = status.get("specDigest")
    return bool(digest) and digest != spec_digest(spec)


def finished_run(status: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """The `status.runs` entry of the run `status` describes."""
    counts = status.get("counts") or {}
    entry = {
        "generation": status.get("runGeneration"),
        "phase": status.get("phase"),
        "reason": reason,
        "startedAt": status.get("startedAt"),
        "finishedAt": status.get("finishedAt"),
        "total": status.get("total"),
        "completed": counts.get("completed"),
        "failed": counts.get("failed"),
    }
    return {key: value for key, value in entry.items() if value is not None}


def new_run_status(status: Mapping[str, Any], generation: int | None,
                   reason: str) -> dict[str, Any]:
    """The merge patch that starts a new run: the old one appended to `runs` (the oldest
    dropped beyond MAX_RUNS_KEPT), the run's own fields cleared."""
    runs = [*(status.get("runs") or []), finished_run(status, reason)][-MAX_RUNS_KEPT:]
    patch: dict[str, Any] = {field: None for field in RUN_STATUS_FIELDS}
    patch.update(runs=runs, runGeneration=generation, firstFailures=[], phase="Pending",
                 progress="0/0")
    return patch
