"""Real redis-servers configured to evict, to keep nothing, or without CONFIG: what the store
reads from them, what the operator reports, and the real `kflow operator` refusing to start."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kflow.cli.redis_server import free_port, start, stop
from kflow.devkit.checkout import REPO
from kflow.devkit.redis import RedisCluster
from kflow.kube.events import EventPoster
from kflow.kube.k8s import KubeApi
from kflow.kube.main import EXIT_REDIS_UNSAFE
from kflow.kube.metrics import Metrics
from kflow.kube.redis_health import report_persistence
from kflow.settings import OperatorPodSettings
from kflow.store.connect import connect
from kflow.store.durability import (
    Durability,
    Persistence,
    eviction_refusal,
    persistence_of,
    read_durability,
)

pytestmark = pytest.mark.redis

# Each server is started with `--save "" --appendonly no` (kflow.cli.redis_server.start); the
# arguments below come after, so they win.
EVICTING = ("--maxmemory-policy", "allkeys-lru")
NO_PERSISTENCE = ("--appendonly", "no", "--save", "")


@contextmanager
def server(tmp_path: Path, *extra: str, config_disabled: bool = False) -> Iterator[str]:
    """A private redis-server with `extra` arguments; CONFIG renamed away when asked (as
    managed Redis services do), through an included redis.conf."""
    args = list(extra)
    if config_disabled:
        conf = tmp_path / "redis.conf"
        conf.write_text('rename-command CONFIG ""\n')
        args += ["--include", str(conf)]
    port = free_port()
    proc = start(port, tmp_path / f"redis-{port}", *args)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop([proc])


async def read(url: str) -> list[Durability]:
    client = await connect(url)
    try:
        return await read_durability(client)
    finally:
        await client.aclose()


async def test_an_evicting_server_is_refused_and_a_default_one_accepted(tmp_path: Path) -> None:
    with server(tmp_path, *EVICTING) as url:
        [evicting] = await read(url)
    with server(tmp_path) as url:
        [default] = await read(url)

    assert evicting.maxmemory_policy == "allkeys-lru" and evicting.config_readable
    assert "maxmemory-policy allkeys-lru" in (eviction_refusal(evicting) or "")
    assert default.maxmemory_policy == "noeviction"
    assert eviction_refusal(default) is None


async def test_persistence_is_read_as_off_aof_or_rdb(tmp_path: Path) -> None:
    with server(tmp_path, *NO_PERSISTENCE) as url:
        [off] = await read(url)
    with server(tmp_path, "--appendonly", "yes", "--appendfsync", "everysec") as url:
        [aof] = await read(url)
    with server(tmp_path, "--save", "3600 1 300 100") as url:
        [rdb] = await read(url)

    assert (off.aof_enabled, off.save) == (False, "")
    assert persistence_of(off) is Persistence.OFF
    assert persistence_of(aof) is Persistence.AOF
    assert rdb.save == "3600 1 300 100" and persistence_of(rdb) is Persistence.RDB


async def test_without_config_the_policy_comes_from_info(tmp_path: Path) -> None:
    with server(tmp_path, *EVICTING, config_disabled=True) as url:
        client = await connect(url)
        try:
            with pytest.raises(Exception, match="unknown command"):
                await client.config_get("maxmemory-policy")
            [reading] = await read_durability(client)
        finally:
            await client.aclose()

    assert not reading.config_readable
    assert reading.maxmemory_policy == "allkeys-lru"
    assert eviction_refusal(reading) is not None
    assert reading.aof_enabled is False and reading.save is None
    assert persistence_of(reading) is Persistence.UNKNOWN


async def test_without_config_aof_still_counts(tmp_path: Path) -> None:
    with server(tmp_path, "--appendonly", "yes", config_disabled=True) as url:
        [reading] = await read(url)

    assert persistence_of(reading) is Persistence.AOF and eviction_refusal(reading) is None


@pytest.mark.rediscluster
async def test_every_primary_of_a_cluster_is_read(redis_cluster_srv: RedisCluster) -> None:
    readings = await read(redis_cluster_srv.url)

    assert len(readings) == 3 and len({r.server for r in readings}) == 3
    assert all(r.maxmemory_policy == "noeviction" for r in readings)
    # The kit's servers keep nothing (tests only).
    assert {persistence_of(r) for r in readings} == {Persistence.OFF}


async def test_no_persistence_sets_the_gauge_to_0_and_warns_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A process on a host: no pod settings, so no Event is attempted (the API is never called).
    metrics = Metrics()
    api = KubeApi()
    events = EventPoster(api, identity="test")
    with server(tmp_path, *NO_PERSISTENCE) as url:
        readings = await read(url)
    with server(tmp_path, "--appendonly", "yes") as url:
        persisted = await read(url)

    with caplog.at_level("WARNING", logger="kflow.kube.redis"):
        text = await report_persistence(readings, metrics=metrics, events=events, api=api,
                                        pod=OperatorPodSettings())
    assert text is not None and "appendonly yes" in text
    assert any("appendfsync everysec" in r.getMessage() for r in caplog.records)
    assert metrics.value("kflow_redis_persistence_enabled") == 0

    assert await report_persistence(persisted, metrics=metrics, events=events, api=api,
                                    pod=OperatorPodSettings()) is None
    assert metrics.value("kflow_redis_persistence_enabled") == 1


def run_operator(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The real `kflow operator` entry point, as the image runs it, pointed at `url`; no
    cluster is needed, since the check comes before kopf starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFLOW_")}
    env |= {"KFLOW_REDIS_URL": url, "KFLOW_STANDALONE": "true",
            "KUBECONFIG": str(tmp_path / "no-such-kubeconfig")}
    kflow = Path(sys.executable).parent / "kflow"
    assert kflow.exists(), f"{kflow} is missing: make venv"
    return subprocess.run([str(kflow), "operator"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("config_disabled", [False, True], ids=["config", "config-renamed"])
def test_the_operator_exits_on_an_evicting_redis_naming_policy_and_fix(
        tmp_path: Path, config_disabled: bool) -> None:
    with server(tmp_path, *EVICTING, config_disabled=config_disabled) as url:
        done = run_operator(url, tmp_path)

    output = done.stdout + done.stderr
    assert done.returncode == EXIT_REDIS_UNSAFE, output
    assert "kflow operator not started" in output
    assert "maxmemory-policy allkeys-lru" in output and "`maxmemory-policy noeviction`" in output
