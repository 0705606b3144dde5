"""The kflow API on a 100,000-node flow: what a caller waits for, request by request.

A Flow seeded into a private redis-server with the server kit (kflow.devkit.server), `kflow
server` run as a host process on it, and each request sent with a `view` token straight to
the server (the service proxy adds one hop). Median of --runs runs of each request after one
warm-up (the token and access caches are warm, as for any second request). Needs the local
cluster (TokenReview, SubjectAccessReview and the Flow object).

Records the section "kflow API on a 100,000-node flow (issue 12)" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request
import uuid

from kflow.devkit.cluster import cluster_running
from kflow.devkit.redis import redis_server
from kflow.devkit.results import record, table
from kflow.devkit.server import HostServer, local_kube, seed_flow, service_account_token


def timed_get(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"X-Kflow-Token": token})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        size = len(answer.read())
    return time.perf_counter() - start, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not cluster_running():
        print("the local cluster is not running: make cluster-up", file=sys.stderr)
        return 2
    kube = local_kube()
    namespace = f"kflow-bench-api-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", namespace)
    rows = []
    try:
        token = service_account_token(kube, namespace, "bench-api", "view", namespace)
        with redis_server() as redis:
            seeded = seed_flow(redis.url, namespace, "big", args.nodes, args.fanout, kube=kube)
            with HostServer(redis.url) as server:
                flow = f"{server.url}/api/v1/namespaces/{namespace}/flows/big"
                requests = [
                    ("flow summary (`GET …/flows/big`)", flow),
                    ("first node page, 500 (`GET …/nodes`)", f"{flow}/nodes?limit=500"),
                    ("failed nodes, first page (`…/nodes?state=failed`)",
                     f"{flow}/nodes?state=failed&limit=500"),
                    ("one node's detail (`…/nodes/b0-leaf-3`)", f"{flow}/nodes/b0-leaf-3"),
                    ("folded graph (`…/graph`, collapse=20)", f"{flow}/graph"),
                ]
                for label, url in requests:
                    timed_get(url, token)  # warm-up
                    runs = [timed_get(url, token) for _ in range(args.runs)]
                    times = [t for t, _ in runs]
                    rows.append([label, f"{statistics.median(times) * 1000:.0f} ms",
                                 f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms",
                                 f"{runs[-1][1]:,} B"])
    finally:
        kube("delete", "namespace", namespace, "--wait=false", check=False)
    record("kflow API on a 100,000-node flow (issue 12)", table(
        [f"{seeded['nodes']:,}-node flow ({seeded['completed']:,} completed, "
         f"{seeded['failed']:,} failed, fan-outs of {args.fanout}); median of {args.runs}",
         "median", "range", "response"], rows)
        + "\n\nHost `kflow server` on a private redis-server, `view` token, caches warm; "
          "straight to the server (the service proxy adds one hop).")
    for row in rows:
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
