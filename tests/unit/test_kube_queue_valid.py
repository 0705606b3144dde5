"""A Queue's Valid condition: written when the verdict changes, not on every event."""

from __future__ import annotations

import asyncio
from typing import Any

from kflow.api.ids import QueueId
from kflow.kube.metrics import Metrics
from kflow.kube.status import QueueStatus


class Recorder:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_queue_status(self, namespace: str, name: str,
                                 status: dict[str, Any]) -> None:
        self.patches.append({"at": f"{namespace}/{name}", **status})


def test_the_valid_condition_is_patched_once_per_verdict() -> None:
    api = Recorder()
    status = QueueStatus(api, Metrics())
    queue = QueueId("etl", "q")

    async def scenario() -> list[bool]:
        return [await status.set_valid(queue, False, "PodPolicyViolation", "hostNetwork"),
                await status.set_valid(queue, False, "PodPolicyViolation", "hostNetwork"),
                await status.set_valid(queue, False, "PodPolicyViolation", "hostPID"),
                await status.set_valid(queue, True, "Valid", "allowed")]

    assert asyncio.run(scenario()) == [True, False, True, True]
    conditions = [p["conditions"][0] for p in api.patches]
    assert [p["at"] for p in api.patches] == ["etl/q"] * 3
    assert [(c["type"], c["status"], c["message"]) for c in conditions] == [
        ("Valid", "False", "hostNetwork"), ("Valid", "False", "hostPID"),
        ("Valid", "True", "allowed")]
    # Ready and Stalled follow Valid, for GitOps tools.
    assert [[(c["type"], c["status"]) for c in p["conditions"][1:]] for p in api.patches] == [
        [("Ready", "False"), ("Stalled", "True")], [("Ready", "False"), ("Stalled", "True")],
        [("Ready", "True"), ("Stalled", "False")]]
    # Still False with another message: the transition time is the first False's.
    assert conditions[1]["lastTransitionTime"] == conditions[0]["lastTransitionTime"]


def test_the_judged_generation_is_reported_even_when_the_verdict_stays() -> None:
    api = Recorder()
    status = QueueStatus(api, Metrics())
    queue = QueueId("etl", "q")

    async def scenario() -> None:
        await status.set_valid(queue, True, "Valid", "allowed", 1)
        await status.set_valid(queue, True, "Valid", "allowed", 1)  # nothing new
        await status.set_valid(queue, True, "Valid", "allowed", 2)  # an edit, same verdict

    asyncio.run(scenario())
    assert [p.get("observedGeneration") for p in api.patches] == [1, 2]
    assert "conditions" in api.patches[0] and "conditions" not in api.patches[1]
