"""kflow-run and kflow worker read Redis from the same settings group as the operator."""

from __future__ import annotations

import pytest

from kflow.sdk import run as kflow_run
from kflow.sdk.worker import build_parser, worker_redis
from kflow.settings import RedisSettings

ATTEMPT = {"KFLOW_FLOW_UID": "u", "KFLOW_NODE": "n", "KFLOW_TOKEN": "t"}


def test_the_worker_reads_tls_and_the_ca_and_its_flags_win(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFLOW_REDIS_URL", "redis://env:6379/0")
    monkeypatch.setenv("KFLOW_REDIS_TLS", "true")
    monkeypatch.setenv("KFLOW_REDIS_TLS_CA_FILE", "/etc/kflow/redis-ca/ca.crt")
    monkeypatch.setenv("KFLOW_REDIS_PREFIX", "env-prefix")

    from_env = worker_redis(build_parser().parse_args(["--queue", "ns/q", "m:f"]))
    flagged = worker_redis(build_parser().parse_args(
        ["--queue", "ns/q", "--redis", "redis://flag:6379/0", "--prefix", "p", "m:f"]))

    assert (from_env.url, from_env.prefix) == ("redis://env:6379/0", "env-prefix")
    assert (flagged.url, flagged.prefix) == ("redis://flag:6379/0", "p")
    for settings in (from_env, flagged):
        assert settings.tls and settings.tls_ca_file == "/etc/kflow/redis-ca/ca.crt"
        assert settings.url_given


def test_the_worker_without_a_redis_url_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFLOW_REDIS_URL", raising=False)

    assert not worker_redis(build_parser().parse_args(["--queue", "ns/q", "m:f"])).url_given
    with_flag = worker_redis(build_parser().parse_args(["--queue", "ns/q", "--redis",
                                                        "redis://r:1/0", "m:f"]))
    assert with_flag.url_given


def test_kflow_run_needs_the_redis_url_and_hands_on_the_whole_group(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in ATTEMPT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KFLOW_REDIS_URL", raising=False)

    assert kflow_run.main(["m:f"]) == kflow_run.EXIT_USAGE
    assert "KFLOW_REDIS_URL" in capsys.readouterr().err

    seen: list[RedisSettings] = []

    async def fake_run(spec: str, settings: kflow_run.RunSettings,
                       redis: RedisSettings) -> int:
        seen.append(redis)
        return kflow_run.EXIT_OK

    monkeypatch.setattr(kflow_run, "run_attempt", fake_run)
    monkeypatch.setenv("KFLOW_REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("KFLOW_REDIS_TLS", "true")
    monkeypatch.setenv("KFLOW_REDIS_SOCKET_TIMEOUT", "5")
    assert kflow_run.main(["m:f"]) == kflow_run.EXIT_OK
    assert seen == [RedisSettings(url="redis://r:6379/0", tls=True, socket_timeout=5)]
