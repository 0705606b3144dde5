"""Start the kopf operator with kflow's handlers, configured from the settings object."""

from __future__ import annotations

import asyncio
import logging
import random

from kflow.settings import Settings, get_settings


def run_operator(settings: Settings | None = None, *, verbose: bool = False) -> int:
    """Run the operator until it is stopped (SIGINT/SIGTERM); returns the exit code."""
    import kopf

    import kflow.kube.handlers  # noqa: F401  (registers the handlers with kopf)

    config = settings or get_settings()
    if config.webhook.enabled:
        from kflow.kube import admission

        admission.register(config.webhook, config.watching.namespaces)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf's per-event chatter ("Handler succeeded") would drown the flow and node lines.
    logging.getLogger("kopf").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("kopf.activities.startup").setLevel(logging.INFO)
    peering = config.peering
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
