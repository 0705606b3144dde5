"""Start and stop bench/pinger.py around a block of work."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def pinging(port: int) -> Iterator[dict[str, Any]]:
    """Yields a dict that, after the block, holds pings, max_ms and p99_ms of the second client."""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ping.json"
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("pinger.py")),
                                 str(port), str(out)])
        time.sleep(0.3)  # let it connect and settle before the measured work starts
        try:
            yield result
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            result.update(json.loads(out.read_text()))
