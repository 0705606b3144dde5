"""The operator's configuration: one settings object, read once from KFLOW_* variables."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the operator can be told; each field is the env var KFLOW_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="KFLOW_", extra="ignore")

    # Redis, as the operator itself reaches it.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str | None = None
    redis_tls: bool = False
    redis_tls_ca_file: str | None = None
    redis_prefix: str = "kflow"

    # What the pods get: a Secret in the Flow's namespace, referenced by name, never a literal.
    redis_secret_name: str = "kflow-redis"
    redis_secret_url_key: str = "url"
    redis_secret_password_key: str = "password"

    # Which namespaces to watch; empty means all of them (cluster-wide).
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # HA: kopf peering. Standalone disables it (single replica, no peering CRD needed).
    peering_name: str = "kflow"
    standalone: bool = False
    # kopf pauses every operator when two share a priority, so replicas pick a random one
    # unless told; the highest is active.
    priority: int | None = None
    peering_lifetime: int = 30  # seconds without a heartbeat before a peer counts as gone

    # Status patches are coalesced to at most one per flow per this many seconds.
    status_interval_seconds: float = 1.0
    # How many first failures the Flow status lists; the rest stay in Redis.
    status_max_failures: int = 10

    # Dispatch.
    take_batch: int = 50  # nodes taken per engine.take call
    lease_ms: int = 30_000  # an active node whose Job vanished goes back to ready after this
    idle_recheck_seconds: float = 30.0  # safety net for wake-ups that happen in other processes
    # A node whose Job vanished this many times (lease expired unrenewed) fails its attempt.
    max_stalled: int = 3
    job_create_retries: int = 5
    keep_finished_jobs: bool = False  # keep Jobs (and pod logs) after their outcome is recorded

    # Identity of this operator process in leases; defaults to host name + pid.
    identity: str | None = None

    # Validating admission webhook: `kubectl apply` of a Flow or Queue gets the verdict of
    # `kflow lint` (node, field, "did you mean", inline children, graph). Off, the operator's
    # Valid=False condition is the only report; on, that condition stays as the backstop.
    webhook_enabled: bool = False
    webhook_listen: str = "0.0.0.0"  # address the HTTPS server binds
    webhook_port: int = 9443
    # How the API server reaches this process, used only when the operator manages the
    # configuration (its clientConfig.url); e.g. 127.0.0.1 for an operator on the API server's
    # host. Under the Helm chart a Service reaches the pods instead.
    webhook_host: str | None = None
    webhook_cert_file: str | None = None  # the server's certificate (PEM), required when enabled
    webhook_key_file: str | None = None
    webhook_ca_file: str | None = None  # CA bundle the API server trusts; default: the cert
    # True: the operator creates and patches a ValidatingWebhookConfiguration of this name
    # itself (kopf's managed mode; an operator run outside the cluster, the tests). False:
    # something else owns it (the Helm chart).
    webhook_managed: bool = False
    webhook_configuration_name: str = "kflow.dev"
    # Ignore: while the operator is down, applies go through unchecked and the Valid condition
    # reports problems later, as with no webhook. Fail: nothing invalid is ever stored, but no
    # Flow or Queue can be created while the webhook is unreachable.
    webhook_failure_policy: Literal["Ignore", "Fail"] = "Ignore"

    metrics_port: int | None = None  # serve Prometheus text on /metrics when set
    liveness_endpoint: str | None = None  # e.g. http://0.0.0.0:8080/healthz

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        # Accept KFLOW_NAMESPACES="a,b" as well as a JSON list.
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
