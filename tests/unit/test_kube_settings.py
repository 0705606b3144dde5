"""Settings, grouped: every KFLOW_* name the chart sets and the docs name is still read, into
its group; the Redis group is the one the operator, kflow-run and kflow worker share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from kflow.settings import RedisSettings, Settings

ROOT = Path(__file__).resolve().parents[2]

# Every variable the operator reads: (name, a value to set, where it lands, what it becomes).
OPERATOR_VARIABLES: list[tuple[str, str, str, Any]] = [
    ("KFLOW_REDIS_URL", "rediss://redis.ops:6380/1", "redis.url", "rediss://redis.ops:6380/1"),
    ("KFLOW_REDIS_PASSWORD", "s3cret", "redis.password", "s3cret"),
    ("KFLOW_REDIS_TLS", "true", "redis.tls", True),
    ("KFLOW_REDIS_TLS_CA_FILE", "/etc/ca.pem", "redis.tls_ca_file", "/etc/ca.pem"),
    ("KFLOW_REDIS_PREFIX", "team-a", "redis.prefix", "team-a"),
    ("KFLOW_REDIS_CONNECT_TIMEOUT", "2.5", "redis.connect_timeout", 2.5),
    ("KFLOW_REDIS_SOCKET_TIMEOUT", "7", "redis.socket_timeout", 7.0),
    ("KFLOW_REDIS_HEALTH_CHECK_INTERVAL", "3", "redis.health_check_interval", 3.0),
    ("KFLOW_REDIS_RETRIES", "0", "redis.retries", 0),
    ("KFLOW_REDIS_RETRY_BACKOFF_BASE", "0.5", "redis.retry_backoff_base", 0.5),
    ("KFLOW_REDIS_RETRY_BACKOFF_CAP", "9", "redis.retry_backoff_cap", 9.0),
    ("KFLOW_REDIS_SECRET_NAME", "creds", "pods.name", "creds"),
    ("KFLOW_REDIS_SECRET_URL_KEY", "address", "pods.url_key", "address"),
    ("KFLOW_REDIS_SECRET_PASSWORD_KEY", "pw", "pods.password_key", "pw"),
    ("KFLOW_REDIS_SECRET_CA_KEY", "ca.crt", "pods.ca_key", "ca.crt"),
    ("KFLOW_POLICY_SERVICE_ACCOUNTS", '["runner", "etl"]', "policy.service_accounts",
     ["runner", "etl"]),
    ("KFLOW_POLICY_ALLOW_HOST_NETWORK", "true", "policy.allow_host_network", True),
    ("KFLOW_POLICY_ALLOW_HOST_PID", "true", "policy.allow_host_pid", True),
    ("KFLOW_POLICY_ALLOW_HOST_PATH", "true", "policy.allow_host_path", True),
    ("KFLOW_POLICY_ALLOW_PRIVILEGED", "true", "policy.allow_privileged", True),
    ("KFLOW_POLICY_DEFAULT_SECURITY_CONTEXT", '{"runAsNonRoot": true}',
     "policy.default_security_context", {"runAsNonRoot": True}),
    ("KFLOW_TENANTS_ENABLED", "true", "tenants.enabled", True),
    ("KFLOW_TENANTS_POD_URL", "redis://pods:6379/0", "tenants.pod_url", "redis://pods:6379/0"),
    ("KFLOW_NAMESPACES", "etl,ml", "watching.namespaces", ["etl", "ml"]),
    ("KFLOW_PEERING_NAME", "kflow-b", "peering.name", "kflow-b"),
    ("KFLOW_STANDALONE", "true", "peering.standalone", True),
    ("KFLOW_PRIORITY", "20", "peering.priority", 20),
    ("KFLOW_PEERING_LIFETIME", "45", "peering.lifetime", 45),
    ("KFLOW_IDENTITY", "operator-0", "peering.identity", "operator-0"),
    ("KFLOW_TAKE_BATCH", "20", "dispatch.take_batch", 20),
    ("KFLOW_LEASE_MS", "60000", "dispatch.lease_ms", 60_000),
    ("KFLOW_IDLE_RECHECK_SECONDS", "12", "dispatch.idle_recheck_seconds", 12.0),
    ("KFLOW_MAX_STALLED", "5", "dispatch.max_stalled", 5),
    ("KFLOW_JOB_CREATE_RETRIES", "2", "dispatch.job_create_retries", 2),
    ("KFLOW_KEEP_FINISHED_JOBS", "true", "dispatch.keep_finished_jobs", True),
    ("KFLOW_POD_LOG_BYTES", "4096", "dispatch.pod_log_bytes", 4096),
    ("KFLOW_POD_LOG_FLOW_BYTES", "1048576", "dispatch.pod_log_flow_bytes", 1_048_576),
    ("KFLOW_STATUS_INTERVAL_SECONDS", "2.5", "status.interval_seconds", 2.5),
    ("KFLOW_CRON_TIME_SCALE", "60", "cron.time_scale", 60.0),
    ("KFLOW_STATUS_MAX_FAILURES", "3", "status.max_failures", 3),
    ("KFLOW_NOTIFY_TIMEOUT_SECONDS", "3", "notify.timeout_seconds", 3.0),
    ("KFLOW_NOTIFY_ATTEMPTS", "2", "notify.attempts", 2),
    ("KFLOW_NOTIFY_BACKOFF_BASE", "0.5", "notify.backoff_base", 0.5),
    ("KFLOW_NOTIFY_BACKOFF_CAP", "5", "notify.backoff_cap", 5.0),
    ("KFLOW_WEBHOOK_ENABLED", "true", "webhook.enabled", True),
    ("KFLOW_WEBHOOK_LISTEN", "127.0.0.1", "webhook.listen", "127.0.0.1"),
    ("KFLOW_WEBHOOK_PORT", "8443", "webhook.port", 8443),
    ("KFLOW_WEBHOOK_HOST", "10.0.0.1", "webhook.host", "10.0.0.1"),
    ("KFLOW_WEBHOOK_CERT_FILE", "/w/tls.crt", "webhook.cert_file", "/w/tls.crt"),
    ("KFLOW_WEBHOOK_KEY_FILE", "/w/tls.key", "webhook.key_file", "/w/tls.key"),
    ("KFLOW_WEBHOOK_CA_FILE", "/w/ca.crt", "webhook.ca_file", "/w/ca.crt"),
    ("KFLOW_WEBHOOK_MANAGED", "true", "webhook.managed", True),
    ("KFLOW_WEBHOOK_CONFIGURATION_NAME", "x.kflow.dev", "webhook.configuration_name",
     "x.kflow.dev"),
    ("KFLOW_WEBHOOK_FAILURE_POLICY", "Fail", "webhook.failure_policy", "Fail"),
    ("KFLOW_METRICS_PORT", "9090", "metrics.port", 9090),
    ("KFLOW_LIVENESS_ENDPOINT", "http://0.0.0.0:8080/healthz", "metrics.liveness_endpoint",
     "http://0.0.0.0:8080/healthz"),
    ("KFLOW_POD_NAME", "kflow-7d4b9-x2k", "operator_pod.pod_name", "kflow-7d4b9-x2k"),
    ("KFLOW_POD_NAMESPACE", "kflow-system", "operator_pod.pod_namespace", "kflow-system"),
    ("KFLOW_OPERATOR_DEPLOYMENT", "kflow", "operator_pod.deployment", "kflow"),
]
# Variables of the pods (kflow-run's attempt, a plain container's input), not the operator's.
POD_VARIABLES = {"KFLOW_DATA", "KFLOW_REDIS_PATIENCE_S"}


def lookup(settings: Settings, path: str) -> Any:
    group, field = path.split(".")
    return getattr(getattr(settings, group), field)


def mentioned(path: Path) -> set[str]:
    return set(re.findall(r"\bKFLOW_[A-Z][A-Z_]*[A-Z]\b", path.read_text()))


@pytest.mark.parametrize(("name", "value", "path", "expected"), OPERATOR_VARIABLES,
                         ids=[v[0] for v in OPERATOR_VARIABLES])
def test_each_variable_is_read_into_its_group(monkeypatch: pytest.MonkeyPatch, name: str,
                                              value: str, path: str, expected: Any) -> None:
    before = lookup(Settings(), path)
    monkeypatch.setenv(name, value)

    assert lookup(Settings(), path) == expected != before


def test_every_name_the_chart_sets_and_the_docs_name_is_read() -> None:
    known = {name for name, *_ in OPERATOR_VARIABLES}
    chart = mentioned(ROOT / "charts" / "kflow" / "templates" / "deployment.yaml")
    docs = (mentioned(ROOT / "README.md") | mentioned(ROOT / "docs" / "autoscaling.md")
            | mentioned(ROOT / "docs" / "redis-production.md"))

    # The CLI's own variables (KFLOW_API, KFLOW_TOKEN...) and the test kit's are read where
    # they are named: os.environ / click's envvar in kflow.cli, kflow.devkit.
    readers = [*(ROOT / "operator" / "kflow" / "cli").rglob("*.py"),
               *(ROOT / "operator" / "kflow" / "devkit").glob("*.py")]
    elsewhere = {name for path in readers for name in re.findall(
        r"(?:environ(?:\.get)?[(\[]|envvar=)\"(KFLOW_[A-Z_]+)\"", path.read_text())}

    assert chart and chart <= known, chart - known
    assert docs - POD_VARIABLES - elsewhere <= known, docs - POD_VARIABLES - elsewhere - known
    assert {"KFLOW_API", "KFLOW_TOKEN", "KFLOW_API_URL"} <= elsewhere


def test_the_redis_group_is_one_class_for_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFLOW_REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("KFLOW_REDIS_TLS", "1")

    assert type(Settings().redis) is RedisSettings
    assert Settings().redis == RedisSettings()
    assert RedisSettings().url_given
    monkeypatch.delenv("KFLOW_REDIS_URL")
    assert not RedisSettings().url_given and RedisSettings().url == "redis://127.0.0.1:6379/0"
    # Bounded by default: no process waits on a dead connection for the OS's 2 h.
    assert RedisSettings().connect_timeout == 5.0 and RedisSettings().socket_timeout == 30.0


def test_kopf_scans_namespaces_only_when_it_serves_all_or_a_pattern() -> None:
    from kflow.kube.handlers import needs_scanning

    assert needs_scanning([])  # every namespace: new ones must be found
    assert needs_scanning(["team-*"]) and needs_scanning(["!kube-system"])
    assert not needs_scanning(["etl", "ml"])  # listed by name: nothing to discover
