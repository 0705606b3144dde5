"""The store's decisions about a Redis server's eviction policy and persistence, from values."""

from __future__ import annotations

import pytest

from kflow.kube.metrics import Metrics
from kflow.kube.redis_health import persistence_enabled, refusal
from kflow.store.durability import (
    Durability,
    Persistence,
    eviction_refusal,
    persistence_of,
    persistence_warning,
)


def reading(policy: str | None = "noeviction", aof: bool | None = False, save: str | None = "",
            config: bool = True) -> Durability:
    return Durability(server="redis.ops:6379", maxmemory_policy=policy, aof_enabled=aof,
                      save=save if config else None, config_readable=config)


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random",
                                    "volatile-lru", "volatile-lfu", "volatile-random",
                                    "volatile-ttl"])
def test_every_evicting_policy_is_refused_naming_it_why_and_the_fix(policy: str) -> None:
    text = eviction_refusal(reading(policy))

    assert text is not None
    assert f"maxmemory-policy {policy}" in text and "redis.ops:6379" in text
    assert "lost or runs again" in text  # why
    assert "`maxmemory-policy noeviction`" in text and "redis.conf" in text  # the fix
    assert "docs/redis-production.md" in text


def test_noeviction_and_an_unknown_policy_are_accepted() -> None:
    assert eviction_refusal(reading("noeviction")) is None
    assert eviction_refusal(reading(None, config=False)) is None


def test_one_evicting_primary_of_a_cluster_refuses_them_all() -> None:
    servers = [reading(), reading("allkeys-lru"), reading()]

    assert refusal(servers) is not None and "allkeys-lru" in (refusal(servers) or "")
    assert refusal([reading(), reading()]) is None


@pytest.mark.parametrize(("aof", "save", "config", "expected"), [
    (True, "", True, Persistence.AOF),
    (True, None, False, Persistence.AOF),  # INFO alone proves AOF
    (False, "3600 1 300 100", True, Persistence.RDB),
    (False, "", True, Persistence.OFF),
    (False, None, False, Persistence.UNKNOWN),  # CONFIG unavailable: save points unknown
    (None, "", True, Persistence.UNKNOWN),
])
def test_persistence_is_aof_then_rdb_then_off(aof: bool | None, save: str | None, config: bool,
                                              expected: Persistence) -> None:
    assert persistence_of(reading(aof=aof, save=save, config=config)) is expected


def test_the_warning_names_the_settings_to_change() -> None:
    off = persistence_warning(reading(aof=False, save=""))
    unknown = persistence_warning(reading(aof=False, config=False))

    assert off is not None and "appendonly yes" in off and "appendfsync everysec" in off
    assert "no persistence" in off and "redis.ops:6379" in off
    assert unknown is not None and "CONFIG is unavailable" in unknown
    assert persistence_warning(reading(aof=True)) is None
    assert persistence_warning(reading(save="900 1")) is None


def test_the_gauge_is_off_if_any_server_is_off_and_absent_while_unknown() -> None:
    aof, off, unknown = reading(aof=True), reading(), reading(config=False)
    assert persistence_enabled([aof, aof]) is True
    assert persistence_enabled([aof, off, unknown]) is False
    assert persistence_enabled([aof, unknown]) is None

    metrics = Metrics()
    assert "kflow_redis_persistence_enabled" not in metrics.render()
    metrics.redis_persistence(False)
    assert metrics.value("kflow_redis_persistence_enabled") == 0
    metrics.redis_persistence(True)
    assert metrics.value("kflow_redis_persistence_enabled") == 1
    metrics.redis_persistence(None)
    assert "kflow_redis_persistence_enabled" not in metrics.render()
