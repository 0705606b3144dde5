"""Start the kopf operator with kflow's handlers, configured from the settings object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from pathlib import Path

from kflow.engine import tune_collector
from kflow.settings import Settings, get_settings

log = logging.getLogger("kflow.kube")

# Exit code of an operator that will not run on the Redis it was given (an evicting one).
EXIT_REDIS_UNSAFE = 3
# Where Kubernetes reads a container's last words (`kubectl describe pod`: Last State).
TERMINATION_LOG = Path("/dev/termination-log")


def run_operator(settings: Settings | None = None, *, verbose: bool = False) -> int:
    """Run the operator until it is stopped (SIGINT/SIGTERM); returns the exit code."""
    import kopf

    import kflow.kube.handlers  # noqa: F401  (registers the handlers with kopf)

    config = settings or get_settings()
    if config.webhook.enabled:
        from kflow.kube import admission

        admission.register(config.webhook, config.watching.namespaces, config.policy)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf's per-event chatter ("Handler succeeded") would drown the flow and node lines.
    logging.getLogger("kopf").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("kopf.activities.startup").setLevel(logging.INFO)
    # Which replica is active, and when a standby takes over (kopf's peering lines).
    logging.getLogger("kopf._core.engines.peering").setLevel(logging.INFO)
    # Every probe of /healthz would be a line every ten seconds.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    refused = check_redis(config)
    if refused is not None:
        return refused
    peering = config.peering
    tune_collector()
    asyncio.run(kopf.operator(
        clusterwide=not config.watching.namespaces,
        namespaces=config.watching.namespaces,
        standalone=peering.standalone,
        priority=peering.priority if peering.priority is not None
        else random.randint(1, 1 << 20),
        # A named peering is mandatory for kopf (it pauses until the peering CRD exists), so
        # standalone mode must not name one.
        peering_name=None if peering.standalone else peering.name,
        liveness_endpoint=config.metrics.liveness_endpoint,
    ))
    return 0


def check_redis(config: Settings) -> int | None:
    """Refuse a Redis that may evict kflow's keys, before any handler runs; the exit code, or
    None to go on. Waits while Redis is unreachable, as the operator always has at start."""
    from kflow.kube.redis_health import read_when_reachable, refusal

    try:
        reason = refusal(asyncio.run(read_when_reachable(config.redis)))
    except Exception as exc:  # a refused password, a forbidden INFO: no point in starting
        log.error("kflow operator not started: could not read Redis's settings: %s", exc)
        return 1
    if reason is None:
        return None
    log.error("kflow operator not started: %s", reason)
    if TERMINATION_LOG.exists():
        with contextlib.suppress(OSError):
            TERMINATION_LOG.write_text(reason[:4000])
    return EXIT_REDIS_UNSAFE
