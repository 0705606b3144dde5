"""A stall meter: a second Redis client, in its own process, that PINGs in a loop and reports
the worst latency seen, so a benchmark's own work never delays the pings it measures.

`with pinging(port) as stall:` runs it around a block; afterwards `stall` holds `pings`,
`max_ms` and `p99_ms`. The process itself is `python -m kflow.devkit.pinger PORT OUTFILE`:
it stops on SIGTERM and writes that dict to OUTFILE as JSON.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SETTLE_S = 0.3


@contextmanager
def pinging(port: int) -> Iterator[dict[str, Any]]:
    """Yields a dict that, after the block, holds pings, max_ms and p99_ms of the second client."""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ping.json"
        proc = subprocess.Popen([sys.executable, "-m", "kflow.devkit.pinger", str(port),
                                 str(out)])
        time.sleep(SETTLE_S)  # let it connect and settle before the measured work starts
        try:
            yield result
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            result.update(json.loads(out.read_text()))


def ping_until_terminated(port: int, outfile: str) -> None:
    """PING 127.0.0.1:`port` every millisecond until SIGTERM, then write the figures."""
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples: list[float] = []
    while not stop:
        t0 = time.perf_counter()
        sock.sendall(b"PING\r\n")
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += sock.recv(64)
        samples.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.001)
    samples.sort()
    p99 = samples[int(0.99 * (len(samples) - 1))] if samples else 0.0
    with open(outfile, "w") as f:
        json.dump({"pings": len(samples), "max_ms": samples[-1] if samples else 0.0,
                   "p99_ms": p99}, f)


if __name__ == "__main__":
    ping_until_terminated(int(sys.argv[1]), sys.argv[2])
