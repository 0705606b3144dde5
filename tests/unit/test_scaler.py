"""The worker-pool sizing rule: up at once, down after the window, to zero after idleSeconds."""

from __future__ import annotations

from kflow.api.models import Queue, Workers
from kflow.kube.scaler import PoolClock, build_deployment, desired_replicas

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
                               "--concurrency", "8", "m:f"]
    url = [e for e in main["env"] if e["name"] == "KFLOW_REDIS_URL"]
    assert url == [{"name": "KFLOW_REDIS_URL",
                    "valueFrom": {"secretKeyRef": {"name": "kflow-redis", "key": "url"}}}]
    labels = body["spec"]["template"]["metadata"]["labels"]
    assert body["spec"]["selector"]["matchLabels"].items() <= labels.items()
