"""kflow's configuration: small documented groups, each read once from its KFLOW_* variables.

After kopf's `OperatorSettings`, the settings are a tree of groups. `RedisSettings` is the one
group every kflow process reads (the operator, `kflow-run` in a Job's pod, `kflow worker`), so
they cannot drift in how they reach Redis; the others belong to the operator. Every field is
the environment variable named beside it; the names are the ones kflow has always read, so a
value set before the settings were grouped still applies.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_names(value: object) -> object:
    """A list variable's text: "a,b" or a JSON list."""
    if isinstance(value, str):
        if value.strip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A list of names read from one variable, "a,b" or a JSON list (not pydantic's JSON-only).
NameList = Annotated[list[str], NoDecode, BeforeValidator(_split_names)]

# Where a process reaches Redis when nothing says otherwise (a local development server).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The most of one attempt's container log kept (KFLOW_POD_LOG_BYTES): Redis answers a read of
# a value this large in milliseconds; more belongs in a log system.
MAX_POD_LOG_BYTES = 16 * 1024 * 1024


class RedisSettings(BaseSettings):
    """How to reach Redis: the same fields for the operator, `kflow-run` and `kflow worker`.

    Satisfies `kflow.store.connect.RedisTarget`, so `connect_to(settings.redis)` opens it.
    """

    model_config = SettingsConfigDict(env_prefix="KFLOW_REDIS_", extra="ignore")

    # KFLOW_REDIS_URL: redis:// or rediss:// (TLS); any node of a Redis Cluster works too.
    # kflow-run and kflow worker refuse to start without it (see `url_given`).
    url: str = DEFAULT_REDIS_URL
    # KFLOW_REDIS_USERNAME: a Redis ACL user (Redis 6+); the `default` user when unset.
    username: str | None = None
    # KFLOW_REDIS_PASSWORD: when the URL carries none.
    password: str | None = None
    # KFLOW_REDIS_TLS: true turns a redis:// URL into rediss:// (TLS).
    tls: bool = False
    # KFLOW_REDIS_TLS_CA_FILE: the PEM bundle of the CA that signed the server's certificate,
    # for a private CA; the system's CAs otherwise.
    tls_ca_file: str | None = None
    # KFLOW_REDIS_PREFIX: every key kflow writes starts with it; processes that share flows
    # must agree on it.
    prefix: str = "kflow"
    # Timeouts and retries (docs/redis-production.md, "Timeouts and retries"). The defaults
    # ride out a dropped connection or a restart of a few seconds inside one command, and find
    # a dead or cut connection in seconds instead of the kernel's 2 h; longer outages are
    # waited out by the callers (the operator's loops, kflow-run's result write).
    # KFLOW_REDIS_CONNECT_TIMEOUT: seconds to open a connection (TCP and TLS handshake).
    connect_timeout: float | None = 5.0
    # KFLOW_REDIS_SOCKET_TIMEOUT: seconds a command may wait for its reply before the
    # connection is dropped and the command retried. Larger than any command kflow sends
    # (it sends no blocking command, and its scripts work on bounded chunks of a flow).
    socket_timeout: float | None = 30.0
    # KFLOW_REDIS_HEALTH_CHECK_INTERVAL: a connection idle this many seconds is checked with a
    # PING before it is used again.
    health_check_interval: float = 15.0
    # KFLOW_REDIS_RETRIES: how many more times a command is sent after a connection error or
    # a timeout, waiting a random time up to min(cap, base * 2**n) seconds before try n.
    retries: int = Field(default=5, ge=0)
    retry_backoff_base: float = Field(default=0.1, gt=0)  # KFLOW_REDIS_RETRY_BACKOFF_BASE
    retry_backoff_cap: float = Field(default=2.0, gt=0)  # KFLOW_REDIS_RETRY_BACKOFF_CAP

    @property
    def url_given(self) -> bool:
        """True when the URL was set (KFLOW_REDIS_URL or an argument), not the default."""
        return "url" in self.model_fields_set


class PodRedisSettings(BaseSettings):
    """What the operator's pods (Jobs and worker Deployments) get to reach Redis.

    A Secret in the flow's namespace, referenced by name, never a literal value in a Job. The
    pods also get the operator's KFLOW_REDIS_TLS and KFLOW_REDIS_PREFIX.
    """

    model_config = SettingsConfigDict(env_prefix="KFLOW_REDIS_SECRET_", extra="ignore")

    name: str = "kflow-redis"  # KFLOW_REDIS_SECRET_NAME
    url_key: str = "url"  # KFLOW_REDIS_SECRET_URL_KEY: its key holding the URL
    password_key: str = "password"  # KFLOW_REDIS_SECRET_PASSWORD_KEY: optional in the Secret
    username_key: str = "username"  # KFLOW_REDIS_SECRET_USERNAME_KEY: optional in the Secret
    # KFLOW_REDIS_SECRET_CA_KEY: its key holding the CA bundle (PEM) of a private CA. Set, the
    # pods mount that key as a file and read it as KFLOW_REDIS_TLS_CA_FILE; unset, they trust
    # the system's CAs.
    ca_key: str | None = None


class TenantSettings(BaseSettings):
    """One Redis shared by namespaces: each gets its own Redis ACL user, fenced to its keys.

    On, the operator keeps a user per namespace that has Flows or Queues and writes its
    credentials into that namespace's pods Secret (`PodRedisSettings.name`); the operator's
    own user (KFLOW_REDIS_USERNAME / the `default` user) must be allowed ACL SETUSER.
    """

    model_config = SettingsConfigDict(env_prefix="KFLOW_TENANTS_", extra="ignore")

    enabled: bool = False  # KFLOW_TENANTS_ENABLED
    # KFLOW_TENANTS_POD_URL: the Redis URL written into the namespaces' Secrets (how pods
    # reach Redis); the operator's own URL when unset.
    pod_url: str | None = None


class PodPolicySettings(BaseSettings):
    """What a Queue's pod template may set (Argo's Workflow Restrictions are the model).

    A Queue that breaks the policy is not served: Valid=False and an Event name the field.
    """

    model_config = SettingsConfigDict(env_prefix="KFLOW_POLICY_", extra="ignore")

    # KFLOW_POLICY_SERVICE_ACCOUNTS: "a,b" or a JSON list of the serviceAccountName values a
    # template may set; empty allows none (pods run as the namespace's `default`).
    service_accounts: NameList = Field(default_factory=list)
    allow_host_network: bool = False  # KFLOW_POLICY_ALLOW_HOST_NETWORK
    allow_host_pid: bool = False  # KFLOW_POLICY_ALLOW_HOST_PID (and hostIPC)
    allow_host_path: bool = False  # KFLOW_POLICY_ALLOW_HOST_PATH: hostPath volumes
    allow_privileged: bool = False  # KFLOW_POLICY_ALLOW_PRIVILEGED (and allowPrivilegeEscalation)
    # KFLOW_POLICY_DEFAULT_SECURITY_CONTEXT: JSON of the container securityContext given to
    # every container of a template that sets none.
    default_security_context: dict[str, object] = Field(default_factory=dict)


class WatchingSettings(BaseSettings):
    """Which objects the operator serves."""

    model_config = SettingsConfigDict(env_prefix="KFLOW_", extra="ignore")

    # KFLOW_NAMESPACES: "a,b" or a JSON list; empty means all of them (cluster-wide).
    namespaces: NameList = Field(default_factory=list)


class PeeringSettings(BaseSettings):
    """High availability through kopf peering: one active operator, the others waiting."""

    model_config = SettingsConfigDict(env_prefix="KFLOW_PEERING_", extra="ignore",
                                      populate_by_name=True)

    name: str = "kflow"  # KFLOW_PEERING_NAME: the peering object the replicas share
    # KFLOW_STANDALONE: no peering (a single replica; no peering CRD needed).
    standalone: bool = Field(False, validation_alias="KFLOW_STANDALONE")
    # KFLOW_PRIORITY: kopf pauses every operator when two share a priority, so replicas pick
    # a random one unless told; the highest is active.
    priority: int | None = Field(None, validation_alias="KFLOW_PRIORITY")
    lifetime: int = 30  # KFLOW_PEERING_LIFETIME: seconds without a heartbeat: a peer is gone
    # KFLOW_IDENTITY: this process in leases and Events; default host name + pid.
    identity: str | None = Field(None, validation_alias="KFLOW_IDENTITY")


class DispatchSettings(BaseSettings):
    """How ready nodes become Jobs, and how long an attempt's lease lasts."""

    model_config = SettingsConfigDict(env_prefix="KFLOW_", extra="ignore")

    take_batch: int = 50  # KFLOW_TAKE_BATCH: nodes taken per engine.take call
    # KFLOW_LEASE_MS: an active node whose Job vanished goes back to ready after this.
    lease_ms: int = 30_000
    # KFLOW_IDLE_RECHECK_SECONDS: safety net for wake-ups that happen in other processes.
    idle_recheck_seconds: float = 30.0
    # KFLOW_MAX_STALLED: a node whose Job vanished this many times (lease expired unrenewed)
    # fails its attempt.
    max_stalled: int = 3
    job_create_retries: int = 5  # KFLOW_JOB_CREATE_RETRIES
    # KFLOW_KEEP_FINISHED_JOBS: keep Jobs (and pod logs) after their outcome is recorded.
    keep_finished_jobs: bool = False
    # KFLOW_POD_LOG_BYTES: the last this many bytes of each attempt's container log are kept
    # in Redis with the flow before its Job is deleted, so the log outlives the pod (read
    # with Engine.attempt_logs); 0 keeps none. Read from the API server bounded.
    pod_log_bytes: int = Field(default=64 * 1024, ge=0, le=MAX_POD_LOG_BYTES)
    # KFLOW_POD_LOG_FLOW_BYTES: all of one flow's kept logs together (docs/redis-production.md,
    # memory): a succeeded attempt's log is kept while they stay within half of it, a failed
    # one's within all of it; the rest are counted, not kept.
    pod_log_flow_bytes: int = Field(default=32 * 1024 * 1024, ge=0)

    @model_validator(mode="after")
    def _pod_log_fits_the_flow_budget(self) -> DispatchSettings:
        if self.pod_log_bytes and self.pod_log_flow_bytes < self.pod_log_bytes:
            raise ValueError(
                f"KFLOW_POD_LOG_FLOW_BYTES ({self.pod_log_flow_bytes}) is smaller than "
                f"KFLOW_POD_LOG_BYTES ({self.pod_log_bytes}): no attempt's full log would fit "
                "in its flow's budget; raise KFLOW_POD_LOG_FLOW_BYTES, or set "
                "KFLOW_POD_LOG_BYTES=0 to keep no pod logs")
        return self


class StatusSettings(BaseSettings):
    """The Flow status the operator patches."""

    model_config = SettingsConfigDict(env_prefix="KFLOW_STATUS_", extra="ignore")

    # KFLOW_STATUS_INTERVAL_SECONDS: patches are coalesced to at most one per flow per this.
    interval_seconds: float = 1.0
    # KFLOW_STATUS_MAX_FAILURES: how many first failures the status lists (the rest stay in
    # Redis).
    max_failures: int = 10


class NotifySettings(BaseSettings):
    """How a Flow's end notification (`spec.notify`) is sent to its webhook."""

    model_config = SettingsConfigDict(env_prefix="KFLOW_NOTIFY_", extra="ignore")

    # KFLOW_NOTIFY_TIMEOUT_SECONDS: one POST gives up after this (connect and answer).
    timeout_seconds: float = Field(default=10.0, gt=0)
    # KFLOW_NOTIFY_ATTEMPTS: tries before the notification is marked Failed; try n waits a
    # random time between half and all of min(cap, base * 2**(n-2)) seconds first; the defaults
    # keep trying for about 1.5 to 2 min (plus the tries' own time).
    attempts: int = Field(default=8, ge=1)
    backoff_base: float = Field(default=1.0, gt=0)  # KFLOW_NOTIFY_BACKOFF_BASE
    backoff_cap: float = Field(default=60.0, gt=0)  # KFLOW_NOTIFY_BACKOFF_CAP


class CronSettings(BaseSettings):
    """How CronFlows are scheduled."""

    model_config = SettingsConfigDict(env_prefix="KFLOW_CRON_", extra="ignore")

    # KFLOW_CRON_TIME_SCALE: a testing knob. The clock CronFlow schedules are read at runs
    # this many times faster than real time from the operator's start (60: "every minute"
    # comes every second), so a test sees many scheduled times in seconds; the status's
    # schedule times are that clock's. Leave it at 1 anywhere else.
    time_scale: float = Field(default=1.0, gt=0)


class WebhookSettings(BaseSettings):
    """The validating admission webhook: `kubectl apply` gets `kflow lint`'s verdict.

    Off, the operator's Valid=False condition is the only report; on, that condition stays
    as the backstop.
    """

    model_config = SettingsConfigDict(env_prefix="KFLOW_WEBHOOK_", extra="ignore")

    enabled: bool = False  # KFLOW_WEBHOOK_ENABLED
    listen: str = "0.0.0.0"  # KFLOW_WEBHOOK_LISTEN: address the HTTPS server binds
    port: int = 9443  # KFLOW_WEBHOOK_PORT
    # KFLOW_WEBHOOK_HOST: how the API server reaches this process, used only when the operator
    # manages the configuration (its clientConfig.url); e.g. 127.0.0.1 for an operator on the
    # API server's host. Under the Helm chart a Service reaches the pods instead.
    host: str | None = None
    # KFLOW_WEBHOOK_CERT_FILE / _KEY_FILE: the server's certificate and key (PEM), required
    # when enabled.
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None  # KFLOW_WEBHOOK_CA_FILE: what the API server trusts; default cert
    # KFLOW_WEBHOOK_MANAGED: true, the operator creates and patches a
    # ValidatingWebhookConfiguration of this name itself (kopf's managed mode; an operator
    # run outside the cluster, the tests); false, something else owns it (the Helm chart).
    managed: bool = False
    configuration_name: str = "kflow.dev"  # KFLOW_WEBHOOK_CONFIGURATION_NAME
    # KFLOW_WEBHOOK_FAILURE_POLICY: Ignore, while the operator is down applies go through
    # unchecked and the Valid condition reports problems later; Fail, nothing invalid is ever
    # stored, but no Flow or Queue can be created while the webhook is unreachable.
    failure_policy: Literal["Ignore", "Fail"] = "Ignore"


class MetricsSettings(BaseSettings):
    """What the operator serves for monitoring: Prometheus metrics and a liveness probe."""

    model_config = SettingsConfigDict(env_prefix="KFLOW_METRICS_", extra="ignore",
                                      populate_by_name=True)

    port: int | None = None  # KFLOW_METRICS_PORT: serve Prometheus text on /metrics when set
    # KFLOW_LIVENESS_ENDPOINT: e.g. http://0.0.0.0:8080/healthz (kopf serves it).
    liveness_endpoint: str | None = Field(None, validation_alias="KFLOW_LIVENESS_ENDPOINT")


class OperatorPodSettings(BaseSettings):
    """Where the operator itself runs, so it can post Events on its own Deployment.

    In a pod, the downward API gives the pod's name and namespace, and the operator finds its
    Deployment through the pod's owner (a ReplicaSet) and that one's owner; a Deployment named
    here is used as is. Unset (a process on a host), warnings go to the log and /metrics only.
    """

    model_config = SettingsConfigDict(env_prefix="KFLOW_", extra="ignore",
                                      populate_by_name=True)

    # KFLOW_POD_NAME / KFLOW_POD_NAMESPACE: the downward API's metadata.name and
    # metadata.namespace.
    pod_name: str | None = None
    pod_namespace: str | None = None
    # KFLOW_OPERATOR_DEPLOYMENT: the operator's Deployment (in KFLOW_POD_NAMESPACE), when the
    # owner chain cannot be read or the pod is not a Deployment's.
    deployment: str | None = Field(None, validation_alias="KFLOW_OPERATOR_DEPLOYMENT")


class ServerSettings(BaseSettings):
    """`kflow server`: the HTTP API (docs/API.md) the CLI and the web view read flows through.

    It reaches Redis with the same `RedisSettings` as the operator.
    """

    model_config = SettingsConfigDict(env_prefix="KFLOW_SERVER_", extra="ignore")

    listen: str = "0.0.0.0"  # KFLOW_SERVER_LISTEN: the address the HTTP server binds
    port: int = Field(default=8080, ge=0, le=65535)  # KFLOW_SERVER_PORT (0: any free port)
    # KFLOW_SERVER_TOKEN_TTL_SECONDS: how long a TokenReview's answer is reused for the same
    # token (kept by the token's hash, never the token).
    token_ttl_seconds: float = Field(default=60.0, ge=0)
    # KFLOW_SERVER_ACCESS_TTL_SECONDS: how long a SubjectAccessReview's answer is reused for
    # the same user, groups, verb and namespace: an RBAC change shows within this.
    access_ttl_seconds: float = Field(default=10.0, ge=0)
    cache_entries: int = Field(default=10_000, ge=1)  # KFLOW_SERVER_CACHE_ENTRIES: per cache
    # KFLOW_SERVER_NODE_PAGE_DEFAULT / _MAX: nodes per page when the caller sets no limit,
    # and the most it may ask for.
    node_page_default: int = Field(default=500, ge=1)
    node_page_max: int = Field(default=5000, ge=1)
    # KFLOW_SERVER_FLOW_PAGE_DEFAULT / _MAX: the same for the list of flows.
    flow_page_default: int = Field(default=100, ge=1)
    flow_page_max: int = Field(default=1000, ge=1)
    # KFLOW_SERVER_GRAPH_MAX_NODES: a flow larger than this is drawn only folded
    # (collapse=0 is refused for it): an unfolded drawing would not be looked at anyway.
    graph_max_nodes: int = Field(default=200_000, ge=1)
    # KFLOW_SERVER_STREAMS: event streams (SSE) served at once; each holds a Redis connection
    # of its own pool while it waits, so reads are never starved by them.
    streams: int = Field(default=100, ge=1)
    # KFLOW_SERVER_KEEPALIVE_SECONDS: an idle event stream sends a comment this often (and
    # waits on Redis at most this long per read).
    keepalive_seconds: float = Field(default=15.0, gt=0, le=25)
    # KFLOW_SERVER_WEB_DIR: the web view's built files; default: the package's web/.
    web_dir: str | None = None

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> ServerSettings:
        for name in ("node_page", "flow_page"):
            default, most = getattr(self, f"{name}_default"), getattr(self, f"{name}_max")
            if default > most:
                raise ValueError(
                    f"KFLOW_SERVER_{name.upper()}_DEFAULT ({default}) is above "
                    f"KFLOW_SERVER_{name.upper()}_MAX ({most}); lower the default or raise "
                    "the limit")
        return self


class Settings(BaseModel):
    """Everything the operator can be told, by group; each group reads its own variables."""

    redis: RedisSettings = Field(default_factory=RedisSettings)
    pods: PodRedisSettings = Field(default_factory=PodRedisSettings)
    tenants: TenantSettings = Field(default_factory=TenantSettings)
    policy: PodPolicySettings = Field(default_factory=PodPolicySettings)
    watching: WatchingSettings = Field(default_factory=WatchingSettings)
    peering: PeeringSettings = Field(default_factory=PeeringSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    cron: CronSettings = Field(default_factory=CronSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    operator_pod: OperatorPodSettings = Field(default_factory=OperatorPodSettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The operator's settings, read from the environment on first use."""
    return Settings()
