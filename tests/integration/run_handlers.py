"""Node handlers that `kflow-run`'s code path calls in the tests' own process."""

from __future__ import annotations

import asyncio
from typing import Any

# The test makes it (in its own event loop) and sets it once it has done what the handler
# must wait for (stopping Redis, say).
release: asyncio.Event | None = None


async def charge_when_released(job: Any) -> dict[str, int]:
    assert release is not None
    await release.wait()
    return {"charged": 1}
