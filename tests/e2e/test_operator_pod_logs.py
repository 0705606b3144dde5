"""Node logs outlive pods: after a flow ends and its Jobs and pods are gone, each attempt's
container log tail (bounded) and its job.log() lines are still in Redis, per attempt; a pod
that never started leaves its reason instead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from kflow.api.ids import FlowId
from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import OperatorWorld, Scenario
from kflow.engine import Engine
from kflow.kube.podlogs import CUT_NOTE

pytestmark = [pytest.mark.cluster]

BOUND = 4096  # KFLOW_POD_LOG_BYTES of this operator: small, so the cut is cheap to show
# 3,000 lines (about 120 KB) before the end the test looks for.
NOISY = ('i=0; while [ $i -lt 3000 ]; do echo "filler line $i of a long log"; i=$((i+1)); '
         'done; echo "noisy: the last line"')
# Lines far longer than the bound, then short ones: the tail asked for by lines would exceed
# the download bound, so fewer lines are asked for until the end fits.
WIDE = ('i=0; while [ $i -lt 5 ]; do head -c 20000 /dev/zero | tr "\\0" x; echo; '
        'i=$((i+1)); done; echo "wide: end 1"; echo "wide: end 2"')


@pytest.fixture
def scenario(operator_world: OperatorWorld) -> Iterator[Scenario]:
    with operator_world.scenario(pod_log_bytes=str(BOUND)) as scenario:
        yield scenario


def test_each_attempts_log_is_kept_after_its_pod_is_gone(scenario: Scenario) -> None:
    no_image = queue("no-image", "echo")
    no_image["spec"]["template"]["spec"]["containers"][0]["image"] = "localhost/no-such-image:1"
    scenario.apply(
        queue("top", "echo"), queue("chatty", "chatty"), queue("noisy", shell=NOISY),
        queue("wide", shell=WIDE), no_image,
        flow("logs", [{"name": "top", "queue": "top", "children": [
            {"name": "flaky", "queue": "chatty", "opts": {"attempts": 2}},
            {"name": "noisy", "queue": "noisy"}, {"name": "wide", "queue": "wide"},
            {"name": "never", "queue": "no-image", "opts": {"onFailure": "ignore"}}]}]))

    assert scenario.wait_phase("logs", timeout=240)["status"]["phase"] == "Succeeded"
    scenario.wait_for("every Job and pod of the flow to be gone", lambda: not scenario.kube.json(
        "jobs,pods", "-n", scenario.namespace)["items"], timeout=120)
    kept, lines = _read(scenario, "logs", ["flaky", "noisy", "wide", "never"])

    # A retried node: each attempt's own stdout and stderr, and its job.log() lines.
    assert [a for a, _ in kept["flaky"]] == [1, 2]
    for attempt, text in kept["flaky"]:
        assert f"chatty flaky attempt {attempt}: to stdout" in text
        assert f"chatty flaky attempt {attempt}: to stderr" in text
        assert f"attempt {3 - attempt}" not in text
    assert "fails attempt 1 on purpose" in kept["flaky"][0][1]  # the traceback
    # kflow-run adds the failure to the job.log() lines of the attempt it ended.
    assert [(line["attempt"], line["msg"]) for line in lines["flaky"]] == [
        ("1", "chatty flaky attempt 1: through job.log"),
        ("1", "failed: RuntimeError: chatty flaky fails attempt 1 on purpose"),
        ("2", "chatty flaky attempt 2: through job.log")]
    # A long log: its end, within the bound, saying that the rest was not kept.
    [(_, noisy)] = kept["noisy"]
    assert noisy.startswith(CUT_NOTE) and noisy.endswith("noisy: the last line\n")
    assert "filler line 2999 of a long log" in noisy and len(noisy.encode()) <= BOUND
    # Lines longer than the bound: the end still, as many whole lines as fit.
    [(_, wide)] = kept["wide"]
    assert wide.endswith("wide: end 1\nwide: end 2\n") and len(wide.encode()) <= BOUND
    # A pod that never started: why, as `kubectl describe` says it.
    [(_, never)] = kept["never"]
    assert "never started its container: ErrImageNeverPull" in never, never


def _read(scenario: Scenario, name: str, nodes: list[str]
          ) -> tuple[dict[str, list[tuple[int, str]]], dict[str, list[dict[str, Any]]]]:
    """Per node: (attempt, kept log) pairs and its job.log() lines, read through the engine."""
    flow_id = FlowId.of(scenario.namespace, scenario.uid(name))

    async def read() -> tuple[dict[str, list[tuple[int, str]]], dict[str, list[dict[str, Any]]]]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(scenario.redis_url)
        try:
            engine = Engine(client, prefix=scenario.prefix)
            kept = {n: await engine.attempt_logs(flow_id, n) for n in nodes}
            lines = {n: list(await engine.logs(flow_id, node=n)) for n in nodes}
            return kept, lines
        finally:
            await client.aclose()

    return asyncio.run(read())
