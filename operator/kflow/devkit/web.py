"""The web view driven as users see it: a real headless Chromium through Playwright (never a
browser Playwright downloads), the page reached through the API server's service proxy, and
screenshots kept as test artefacts. Shared by the web e2e tests and bench/bench_web_paint.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from kflow.devkit.operator import Kube

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = os.environ.get("KFLOW_CHROMIUM", "/usr/bin/chromium")
# Headless, and nothing that reaches out to Google's hosts: this machine's network is closed,
# and Chromium would retry those connections all the time.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")


def artifacts_dir() -> Path:
    """Where screenshots go: $KFLOW_ARTIFACTS, else /tmp/kflow-artifacts."""
    path = Path(os.environ.get("KFLOW_ARTIFACTS", "/tmp/kflow-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium of the machine's (Debian's `chromium`, see hack/deps.sh)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium "
                           "(hack/deps.sh does), or set KFLOW_CHROMIUM to a Chromium binary")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def _serving(argv: list[str], pattern: str, what: str, timeout: float) -> Iterator[str]:
    """Runs a local proxy and yields the URL from the first line of its stdout that has one."""
    # stderr to a file: a pipe nobody reads would fill up and stall the proxy.
    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            found = re.search(pattern, line)
            if found:
                yield found.group(0).rstrip("/")
                return
        errors.seek(0)
        raise RuntimeError(f"{what} did not start: {line!r} {errors.read()[-2000:]}")
    finally:
        errors.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def kflow_ui(kube: Kube, api: str, token: str, timeout: float = 30) -> Iterator[str]:
    """`kflow ui` on a free loopback port for the API Service `api` ("<namespace>/<service>"),
    adding `token` to every request (the page itself sends none); yields its base URL."""
    kflow = str(Path(sys.executable).parent / "kflow")
    with _serving([kflow, "ui", "--port", "0", "--kubeconfig", str(kube.kubeconfig), "--api",
                   api, "--token", token], r"http://\S+/", "kflow ui", timeout) as url:
        yield url


@contextmanager
def kubectl_proxy(kube: Kube, timeout: float = 30) -> Iterator[str]:
    """`kubectl proxy` on a free loopback port (the kubeconfig's credentials for the API
    server; the kflow API still wants the caller's own token); yields its base URL."""
    with _serving([kube.kubectl, "--kubeconfig", str(kube.kubeconfig), "proxy", "--port=0",
                   "--address=127.0.0.1"], r"http://127\.0\.0\.1:\d+|127\.0\.0\.1:\d+",
                  "kubectl proxy", timeout) as url:
        yield url if url.startswith("http") else f"http://{url}"


def service_proxy_page(proxy: str, namespace: str, service: str) -> str:
    """The web view's URL through the API server's service proxy (port name `http`)."""
    return f"{proxy}/api/v1/namespaces/{namespace}/services/http:{service}:http/proxy/"
