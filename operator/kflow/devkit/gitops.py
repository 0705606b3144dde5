"""What Flux (kstatus) and Argo CD (our health.lua) make of kflow objects, by running the real
code: hack/gitops-health, a Go program built from sigs.k8s.io/cli-utils and gopher-lua through
the Go module proxy on first use, cached under the kit's cache directory like helm.

Used by the tests (hand-written objects, and objects read from a live run) and by anyone who
wants to see what their GitOps tool will show: `python -m kflow.devkit.gitops < flows.json`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kflow.devkit.checkout import in_checkout
from kflow.devkit.cluster import cache_dir

# The files the binary is built from: a change to any of them builds it again.
SOURCES = ("go.mod", "go.sum", "main.go")
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Health:
    status: str
    message: str


@dataclass(frozen=True)
class GitOpsHealth:
    """One object as the two tools see it."""

    kind: str
    name: str
    kstatus: Health  # Current, InProgress, Failed, Terminating, ...
    argocd: Health | None  # Healthy, Progressing, Degraded, Suspended; None: no health.lua


def health_dir() -> Path:
    """The Argo CD health checks, in Argo CD's layout: <group>/<Kind>/health.lua."""
    return in_checkout("gitops", "argocd", "health")


def _go() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go"
                                   if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise RuntimeError("building hack/gitops-health needs Go (1.24 or newer) on PATH or in "
                           "/usr/local/go, and the Go module proxy: install Go, then run again")
    return found


def health_tool() -> Path:
    """The gitops-health binary, built on first use (tens of seconds) and cached by the hash of
    its sources; concurrent callers wait for one build."""
    source = in_checkout("hack", "gitops-health")
    digest = hashlib.sha256(b"".join((source / name).read_bytes() for name in SOURCES))
    out = cache_dir() / f"gitops-health-{digest.hexdigest()[:12]}"
    binary = out / "gitops-health"
    if binary.exists():
        return binary
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "gitops-health.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():  # built by whoever held the lock before us
            return binary
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0",
               "GOFLAGS": "-buildvcs=false -mod=readonly"}
        built = subprocess.run(
            [_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", f"{binary}.tmp", "."],
            cwd=source, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
            check=False)
        if built.returncode != 0:
            raise RuntimeError(f"building hack/gitops-health failed:\n{built.stderr[-3000:]}")
        os.replace(f"{binary}.tmp", binary)
    return binary


def run_health_tool(objects: list[dict[str, Any]], health: Path | None = None,
                    ) -> subprocess.CompletedProcess[str]:
    """gitops-health on the objects (health: another tree of health.lua files than ours)."""
    return subprocess.run(
        [str(health_tool()), "-health", str(health or health_dir())],
        input=json.dumps(objects), capture_output=True, text=True, timeout=120, check=False)


def gitops_health(objects: list[dict[str, Any]]) -> list[GitOpsHealth]:
    """How kstatus and Argo CD see each object, in order; fails naming a broken health.lua."""
    done = run_health_tool(objects)
    if done.returncode != 0:
        raise RuntimeError(f"gitops-health failed (exit {done.returncode}):\n"
                           f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return [GitOpsHealth(kind=r["kind"], name=r["name"],
                         kstatus=Health(r["kstatus"]["status"], r["kstatus"]["message"]),
                         argocd=Health(r["argocd"]["status"], r["argocd"]["message"])
                         if r["argocd"] else None)
            for r in json.loads(done.stdout)]


def main() -> int:
    """Read objects as JSON (one, a List or an array) on stdin; print each one's health."""
    objects: Any = json.load(sys.stdin)
    if isinstance(objects, dict):
        objects = objects.get("items", [objects]) if objects.get("kind", "").endswith("List") \
            else [objects]
    for seen in gitops_health(objects):
        argocd = f"{seen.argocd.status}: {seen.argocd.message}" if seen.argocd else "-"
        print(f"{seen.kind}/{seen.name}\n  kstatus  {seen.kstatus.status}: "
              f"{seen.kstatus.message}\n  Argo CD  {argocd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
