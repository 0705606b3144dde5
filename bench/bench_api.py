"""The kflow API on a 100,000-node flow: what a caller waits for, request by request.

A Flow seeded into a private redis-server with the server kit (kflow.devkit.server), `kflow
server` run as a host process on it, and each request sent with a `view` token straight to
the server (the service proxy adds one hop). Median of --runs runs of each request after one
warm-up (the token and access caches are warm, as for any second request). Needs the local
cluster (TokenReview, SubjectAccessReview and the Flow object).

Records the section "kflow API on a 100,000-node flow (issue 12)" of bench/RESULTS.md.
"""

from __future__ import annotations

import statistics
import sys
import time
import urllib.request

from kflow.devkit.results import record, table
from kflow.devkit.server import big_flow_args, seeded_server


def timed_get(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"X-Kflow-Token": token})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        size = len(answer.read())
    return time.perf_counter() - start, size


def main() -> int:
    args = big_flow_args(__doc__.splitlines()[0])
    rows = []
    with seeded_server("api", args.nodes, args.fanout) as seeded:
        flow = f"{seeded.server.url}/api/v1/namespaces/{seeded.namespace}/flows/big"
        requests = [
            ("flow summary (`GET …/flows/big`)", flow),
            ("first node page, 500 (`GET …/nodes`)", f"{flow}/nodes?limit=500"),
            ("failed nodes, first page (`…/nodes?state=failed`)",
             f"{flow}/nodes?state=failed&limit=500"),
            ("one node's detail (`…/nodes/b0-leaf-3`)", f"{flow}/nodes/b0-leaf-3"),
            ("folded graph (`…/graph`, collapse=20)", f"{flow}/graph"),
        ]
        for label, url in requests:
            timed_get(url, seeded.token)  # warm-up
            runs = [timed_get(url, seeded.token) for _ in range(args.runs)]
            times = [t for t, _ in runs]
            rows.append([label, f"{statistics.median(times) * 1000:.0f} ms",
                         f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms",
                         f"{runs[-1][1]:,} B"])
    counts = seeded.flow
    record("kflow API on a 100,000-node flow (issue 12)", table(
        [f"{counts['nodes']:,}-node flow ({counts['completed']:,} completed, "
         f"{counts['failed']:,} failed, fan-outs of {args.fanout}); median of {args.runs}",
         "median", "range", "response"], rows)
        + "\n\nHost `kflow server` on a private redis-server, `view` token, caches warm; "
          "straight to the server (the service proxy adds one hop).")
    for row in rows:
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
