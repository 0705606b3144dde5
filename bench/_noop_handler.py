"""A no-op node handler for the worker benchmarks (`bench/_noop_handler.py:run`)."""

from __future__ import annotations

from typing import Any


async def run(job: Any) -> int:
    return 1
