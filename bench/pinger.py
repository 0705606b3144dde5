"""A second Redis client in its own process: PINGs in a loop and reports the worst latency seen.

Run as `python bench/pinger.py PORT OUTFILE`; it stops on SIGTERM and writes
`{"pings": n, "max_ms": x, "p99_ms": y}` to OUTFILE. A separate process, so the benchmark's
own work never delays the pings it measures.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time


def main() -> None:
    port, outfile = int(sys.argv[1]), sys.argv[2]
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
    main()
