"""`kubectl kflow get` on a 100,000-node flow: whole-process wall time, as a user waits for it.

A Flow seeded into a private redis-server with the server kit (kflow.devkit.server: one small
Flow object in a namespace no operator watches, its 100,000-node graph written through the
Engine, some leaves completed and failed, a batch active), `kflow server` run as a host
process on it, and `kubectl kflow get` run by the real kubectl (which finds the plugin on
PATH) with a `view` token, reaching the server directly (--api-url: a port-forward's path;
the service proxy adds one hop). The command prints the summary, the first failures and the
unfinished nodes (a page per state), never every node. Median of --runs runs after one
warm-up (the server's TokenReview/SubjectAccessReview caches are warm, as for any second
command). Needs the local cluster.

Records the section "kubectl kflow get of a 100,000-node flow (issue 12)" of bench/RESULTS.md;
target < 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

from kflow.devkit.checkout import REPO
from kflow.devkit.cluster import bin_dir, cluster_dir, cluster_running
from kflow.devkit.operator import kubectl_from_kubeconfig
from kflow.devkit.redis import redis_server
from kflow.devkit.results import record, table
from kflow.devkit.server import HostServer, seed_flow, service_account_token

TARGET_S = 2.0


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    return time.perf_counter() - start, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not cluster_running():
        print("the local cluster is not running: make cluster-up", file=sys.stderr)
        return 2
    kubectl = str(bin_dir() / "kubectl")
    kubeconfig = cluster_dir() / "kubeconfig"
    kube = kubectl_from_kubeconfig(kubeconfig, kubectl)
    namespace = f"kflow-bench-cli-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", namespace)
    try:
        token = service_account_token(kube, namespace, "bench-cli", "view", namespace)
        # What the chart's aggregated ClusterRoles add to `view`, without installing the chart.
        kube("create", "role", "flows-reader", "-n", namespace, "--verb=get,list,watch",
             "--resource=flows.kflow.dev")
        kube("create", "rolebinding", "bench-cli-flows", "-n", namespace, "--role=flows-reader",
             f"--serviceaccount={namespace}:bench-cli")
        with redis_server() as redis:
            seeded = seed_flow(redis.url, namespace, "big", args.nodes, args.fanout, kube=kube)
            with HostServer(redis.url) as server:
                env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
                       "KUBECONFIG": str(kubeconfig), "KFLOW_TOKEN": token,
                       "KFLOW_API_URL": server.url}
                cmd = [kubectl, "kflow", "get", "big", "-n", namespace]
                _, warm = timed(cmd, env)
                if warm.returncode != 0 or f"/{args.nodes} done" not in warm.stdout:
                    print(f"kubectl kflow get failed ({warm.returncode}):\n{warm.stdout}\n"
                          f"{warm.stderr}", file=sys.stderr)
                    return 1
                runs = [timed(cmd, env)[0] for _ in range(args.runs)]
                version_runs = [timed([kubectl, "kflow", "version"], env)[0]
                                for _ in range(args.runs)]
    finally:
        kube("delete", "namespace", namespace, "--wait=false", check=False)
    median = statistics.median(runs)
    rows = [
        ["`kubectl kflow get big` (summary, failures, unfinished nodes)",
         f"{median:.2f} s", f"{min(runs):.2f}-{max(runs):.2f} s"],
        ["`kubectl kflow version` (process start: Python, imports, kubectl's dispatch)",
         f"{statistics.median(version_runs):.2f} s",
         f"{min(version_runs):.2f}-{max(version_runs):.2f} s"],
    ]
    verdict = "meets" if median < TARGET_S else "MISSES"
    record("kubectl kflow get of a 100,000-node flow (issue 12)", table(
        [f"{seeded['nodes']:,}-node flow ({seeded['completed']:,} completed, "
         f"{seeded['failed']:,} failed, fan-outs of {args.fanout}); median of {args.runs} "
         "runs, whole process wall time", "median", "range"], rows)
        + f"\n\nThe real kubectl runs the kubectl-kflow plugin from PATH; the CLI reaches a "
          f"host `kflow server` directly (--api-url, as through a port-forward) with a `view` "
          f"token. Target < {TARGET_S:.0f} s: {verdict}. Output of one run:\n\n```\n"
        + warm.stdout.strip()[:3000] + "\n```")
    return 0 if median < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
