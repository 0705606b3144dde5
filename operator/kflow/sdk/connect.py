"""The SDK's way to reach Redis: the store's client factory, re-exported for pods and workers."""

from __future__ import annotations

from typing import Any

from kflow.store.connect import connect


async def connect_redis(url: str, *, password: str | None = None) -> Any:
    """A client for `url` (single server or any node of a Redis Cluster)."""
    return await connect(url, password=password)
