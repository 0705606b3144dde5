"""Private redis-server processes on loopback: for `kflow run --local` and the test suite."""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 15.0


def free_port(*, bus: bool = False) -> int:
    """A free loopback port low enough that a cluster node's bus port (port + 10000) is valid;
    with `bus`, one whose bus port is free as well (a cluster node listens on both)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port <= 55535 and (not bus or _free(port + 10000)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_taken(error: BaseException) -> bool:
    """Whether `start` failed because a port it needed was taken meanwhile (free ports are
    only free when chosen): the caller picks others and starts again."""
    return "Address already in use" in str(error)


def _die_with_parent() -> None:
    # If our process is SIGKILLed, its private Redis must not live on as an orphan.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    """Start redis-server on 127.0.0.1:`port` (no persistence), and wait until it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: install it (apt-get install "
                           "redis-server) or pass --redis redis://HOST:PORT")
    workdir.mkdir(parents=True, exist_ok=True)
    logfile = workdir / "redis.log"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--logfile", str(logfile), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    try:
        _wait_for_ping(port, proc, logfile)
    except BaseException:
        stop([proc])
        raise
    return proc


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the servers; kill what has not exited after 10 s."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_ping(port: int, proc: subprocess.Popen[bytes], logfile: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = logfile.read_text()[-1000:] if logfile.exists() else ""
            raise RuntimeError(f"redis-server on port {port} exited at start: {tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not answer within "
                       f"{START_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server in a temporary folder on a free loopback port; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="kflow-redis-") as tmp:
        port = free_port()
        proc = start(port, Path(tmp))
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop([proc])
