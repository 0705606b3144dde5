"""The worker-pool sizing rule: up at once, down after the window, to zero after idleSeconds."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from kflow.api.models import Queue, Workers
from kflow.kube.metrics import Metrics
from kflow.kube.scaler import (
    PoolClock,
    PoolState,
    build_deployment,
    desired_replicas,
    reconcile_worker_pool,
    worker_command,
)

W = Workers(min=0, max=5, nodes_per_worker=10, idle_seconds=60)
NOW = 1_000_000


def test_scales_up_at_once_to_the_computed_count() -> None:
    assert desired_replicas(25, 0, W, None, NOW, 0) == 3
    assert desired_replicas(1, 0, W, None, NOW, 0) == 1
    assert desired_replicas(20, 10, W, None, NOW, 1) == 3  # active nodes count too


def test_never_above_max_nor_below_min() -> None:
    assert desired_replicas(10_000, 0, W, None, NOW, 0) == 5
    assert desired_replicas(10_000, 0, W, None, NOW, 9) == 5  # spec shrank under the pool
    floor = Workers(min=2, max=5, nodes_per_worker=10, idle_seconds=0)
    assert desired_replicas(0, 0, floor, NOW - 10**9, NOW, 0) == 2
    assert desired_replicas(0, 0, floor, NOW - 10**9, NOW, 4) == 2


def test_idle_pool_waits_idle_seconds_then_scales_to_zero() -> None:
    assert desired_replicas(0, 0, W, NOW - 59_999, NOW, 3) == 3
    assert desired_replicas(0, 0, W, None, NOW, 3) == 3  # idleness not yet observed
    assert desired_replicas(0, 0, W, NOW - 60_000, NOW, 3) == 0


def test_less_work_shrinks_only_after_the_window() -> None:
    assert desired_replicas(10, 0, W, None, NOW, 4) == 4
    assert desired_replicas(10, 0, W, None, NOW, 4, below_since_ms=NOW - 29_999) == 4
    assert desired_replicas(10, 0, W, None, NOW, 4, below_since_ms=NOW - 30_000) == 1
    assert desired_replicas(10, 0, W, None, NOW, 4, below_since_ms=NOW - 5, window_ms=5) == 1


def test_clock_tracks_idle_and_below_since_and_a_burst_does_not_flap() -> None:
    clock = PoolClock()
    current = 0
    for t, ready in [(0, 40), (1_000, 0), (20_000, 0), (21_000, 35), (22_000, 0),
                     (40_000, 0), (81_999, 0), (82_000, 0)]:
        need = min(5, -(-ready // 10))
        clock.observe(ready, need, current, t)
        current = desired_replicas(ready, 0, W, clock.idle_since_ms, t, current,
                                   below_since_ms=clock.below_since_ms)
        if t == 0:
            assert current == 4
        elif t < 82_000:
            assert current == 4, t  # idle gaps shorter than 60 s keep the pods
    assert current == 0  # idle since 22 s, so gone at 82 s


def test_deployment_runs_the_worker_from_a_job_mode_template() -> None:
    queue = Queue.model_validate({
        "metadata": {"name": "extract", "namespace": "etl"},
        "spec": {"mode": "Worker", "workers": {"max": 4, "nodesPerWorker": 8},
                 "template": {"spec": {"containers": [
                     {"name": "main", "image": "acme/x:1", "command": ["kflow-run", "m:f"],
                      "env": [{"name": "KFLOW_REDIS_URL", "value": "leak"}]}]}}}})
    body = build_deployment(queue, 2)
    assert body["metadata"]["name"] == "kflow-worker-extract"
    assert body["spec"]["replicas"] == 2
    main = body["spec"]["template"]["spec"]["containers"][0]
    assert main["command"] == ["kflow", "worker", "--queue", "etl/extract",
                               "--concurrency", "8", "--grace-ms", "28000", "m:f"]
    url = [e for e in main["env"] if e["name"] == "KFLOW_REDIS_URL"]
    assert url == [{"name": "KFLOW_REDIS_URL",
                    "valueFrom": {"secretKeyRef": {"name": "kflow-redis", "key": "url"}}}]
    labels = body["spec"]["template"]["metadata"]["labels"]
    assert body["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_worker_pods_get_redis_tls_and_the_private_ca_like_job_pods() -> None:
    from kflow.kube.jobs import RedisEnv

    queue = Queue.model_validate(copy.deepcopy(POOL_QUEUE))
    redis = RedisEnv(secret_name="creds", tls=True, ca_key="ca.crt")
    body = build_deployment(queue, 1, redis=redis)

    pod = body["spec"]["template"]["spec"]
    main = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["KFLOW_REDIS_TLS"] == "true"
    ca_file = env["KFLOW_REDIS_TLS_CA_FILE"]
    assert ca_file is not None
    assert any(ca_file.startswith(m["mountPath"] + "/") for m in main["volumeMounts"])
    assert [v["secret"]["secretName"] for v in pod["volumes"]] == ["creds"]
    # The same mount again (a reconcile of the built template) is not doubled.
    redis.mount_ca(pod, main)
    assert len(pod["volumes"]) == 1 and len(main["volumeMounts"]) == 1


def test_worker_command_accepts_both_job_mode_forms_and_leaves_others_alone() -> None:
    expected = ["kflow", "worker", "--queue", "ns/q", "--concurrency", "4", "--grace-ms",
                "3000", "pkg.mod:fn"]
    assert worker_command(["kflow-run", "pkg.mod:fn"], [], "ns/q", 4, 3000) == expected
    assert worker_command(["kflow-run"], ["pkg.mod:fn"], "ns/q", 4, 3000) == expected
    # No command: the runner image's entrypoint is kflow-run, args name the handler.
    assert worker_command([], ["pkg.mod:fn"], "ns/q", 4, 3000) == expected
    assert worker_command(["/bin/sh", "-c", "echo"], [], "ns/q", 4, 3000) is None
    assert worker_command([], ["--verbose"], "ns/q", 4, 3000) is None
    own = ["kflow", "worker", "--queue", "ns/q", "m:f"]
    assert worker_command(own, [], "ns/q", 4, 3000) is None


POOL_QUEUE = {
    "metadata": {"name": "squares", "namespace": "team", "uid": "u-1"},
    "spec": {"mode": "Worker", "workers": {"max": 3, "nodesPerWorker": 5, "idleSeconds": 5},
             "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                                   "containers": [{"name": "main", "image": "img",
                                                   "args": ["m:f"]}]}}},
}


def test_deployment_is_owned_by_the_queue_and_restarts_its_pods() -> None:
    body = build_deployment(Queue.model_validate(POOL_QUEUE), 0)
    assert body["metadata"]["ownerReferences"] == [{
        "apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "name": "squares", "uid": "u-1",
        "controller": True}]
    pod = body["spec"]["template"]["spec"]
    assert "restartPolicy" not in pod  # a Deployment only allows Always
    assert pod["containers"][0]["command"] == [
        "kflow", "worker", "--queue", "team/squares", "--concurrency", "5", "--grace-ms",
        "3000", "m:f"]
    assert "args" not in pod["containers"][0]
    assert body["spec"]["template"]["metadata"]["labels"]["kflow.dev/queue"] == "squares"


class FakeEngine:
    def __init__(self) -> None:
        self.depth = (0, 0, 0)

    async def queue_depth(self, queue_id: str) -> tuple[int, int, int]:
        return self.depth


class MemoryDeployments:
    """Deployments kept in a dict, with a log of the calls the scaler made."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    async def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("read")
        found = self.objects.get(name)
        return copy.deepcopy(found) if found else None

    async def create_deployment(self, namespace: str, body: dict[str, Any]) -> bool:
        self.calls.append("create")
        self.objects[body["metadata"]["name"]] = copy.deepcopy(body)
        return True

    async def replace_deployment(self, namespace: str, name: str,
                                 body: dict[str, Any]) -> None:
        self.calls.append("replace")
        self.objects[name] = copy.deepcopy(body)

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.calls.append(f"scale {replicas}")
        self.objects[name]["spec"]["replicas"] = replicas

    def pods_follow(self) -> None:
        for obj in self.objects.values():
            obj["status"] = {"replicas": obj["spec"]["replicas"]}


def test_reconcile_creates_scales_on_change_only_and_follows_template_edits() -> None:
    async def scenario() -> None:
        engine, api, state = FakeEngine(), MemoryDeployments(), PoolState()

        async def tick(now_ms: int, queue: dict[str, Any] = POOL_QUEUE) -> int:
            report = await reconcile_worker_pool(queue, engine, api, state, now_ms=now_ms)
            api.pods_follow()
            return report.replicas

        assert await tick(0) == 0
        assert api.calls == ["read", "create"]
        engine.depth = (20, 0, 0)
        assert await tick(1_000) == 3  # ceil(20 / 5) = 4, capped at max 3
        assert api.calls[-1] == "scale 3"
        api.calls.clear()
        engine.depth = (10, 5, 0)
        for t in range(2_000, 5_000, 1_000):
            assert await tick(t) == 3
        assert [c for c in api.calls if c != "read"] == [], "no writes while the count holds"
        assert api.calls.count("read") <= 1, "a settled pool is not read on every tick"
        engine.depth = (0, 0, 0)
        assert await tick(6_000) == 3
        assert await tick(10_999) == 3  # idle 4.999 s of idleSeconds 5
        assert await tick(11_000) == 0
        assert api.calls[-1] == "scale 0"
        edited = copy.deepcopy(POOL_QUEUE)
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = "img:2"
        await tick(12_000, edited)
        assert api.calls[-1] == "replace"
        image = api.objects["kflow-worker-squares"]["spec"]["template"]["spec"]["containers"]
        assert image[0]["image"] == "img:2"

    asyncio.run(scenario())


def test_reconcile_recreates_a_deleted_deployment_at_the_next_resync() -> None:
    async def scenario() -> None:
        engine, api, state = FakeEngine(), MemoryDeployments(), PoolState()
        await reconcile_worker_pool(POOL_QUEUE, engine, api, state, now_ms=0)
        api.objects.clear()
        await reconcile_worker_pool(POOL_QUEUE, engine, api, state, now_ms=1,
                                    resync_seconds=0.0)
        assert api.calls == ["read", "create", "read", "create"]
        assert "kflow-worker-squares" in api.objects

    asyncio.run(scenario())


def test_metrics_expose_queue_depth_per_state_and_pool_size() -> None:
    metrics = Metrics()
    metrics.queue_depth("team/squares", 7, 2, 1)
    metrics.pool_size("team/squares", 3)
    assert metrics.value("kflow_queue_ready", queue="team/squares") == 7
    assert metrics.value("kflow_queue_active", queue="team/squares") == 2
    assert metrics.value("kflow_queue_delayed", queue="team/squares") == 1
    assert metrics.value("kflow_queue_nodes", queue="team/squares", state="ready") == 7
    assert metrics.value("kflow_queue_workers", queue="team/squares") == 3
    assert "# TYPE kflow_queue_ready gauge" in metrics.render().splitlines()
    metrics.pool_size("team/squares", None)
    assert "kflow_queue_workers{" not in metrics.render()
