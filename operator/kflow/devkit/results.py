"""Benchmark figures in bench/RESULTS.md: one section per benchmark, machine and date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from kflow.devkit.checkout import REPO

RESULTS = REPO / "bench" / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "Written by the scripts under bench/ (`make bench`); each section is replaced when its\n"
    "benchmark runs again. Figures are from one run on a shared, noisy 2-core machine: read\n"
    "them as orders of magnitude and ratios, not as precise timings.\n"
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                           check=False).stdout
    redis_v = re.search(r"v=(\S+)", redis)
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, "
            f"redis-server {redis_v.group(1) if redis_v else '?'}, "
            f"load average {os.getloadavg()[0]:.1f} when recorded")


def record(section: str, body: str) -> None:
    """Replace (or append) the section `## <section>`, stamped with the machine and the date."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"## {section}\n\n_{stamp} — {machine()}_\n\n{body.strip()}\n"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _m: block + "\n", text) if pattern.search(text) else (
        text.rstrip("\n") + "\n\n" + block)
    RESULTS.write_text(text.rstrip("\n") + "\n")
    print(block)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]
