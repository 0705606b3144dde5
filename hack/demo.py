"""`make demo`: the order workflow end to end, installed the way users install kflow.

The local cluster (tests/cluster; built on first use, reused when running), the images built
from uv.lock and loaded into it, `helm install kflow charts/kflow -n kflow-system
--create-namespace` with the bundled Redis, the namespace's `kflow-redis` Secret made as the
chart's NOTES say, `kubectl apply -f examples/order-workflow.yaml` exactly as the file is in
the repository, `kubectl wait`, the tree of nodes with their results as `kubectl kflow get`
shows it to a user bound only to `view`, and everything removed again (a cluster that was
already running is left running). No host network, no repository
mounted into a pod.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from kflow.api import Flow, load_manifests
from kflow.devkit.checkout import REPO
from kflow.devkit.cluster import bin_dir, cluster_dir, cluster_running, run_script
from kflow.devkit.install import Installation, helm_binary, load_images
from kflow.devkit.operator import JobWatch, local_kube
from kflow.devkit.server import service_account_token

EXAMPLE = REPO / "examples" / "order-workflow.yaml"
NAMESPACE = "kflow-demo"


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=int, default=600, help="seconds to wait for the flow")
    parser.add_argument("--keep", action="store_true",
                        help="leave the release, the namespace and the cluster running")
    args = parser.parse_args()
    t_start = time.monotonic()

    started_cluster = False
    if not cluster_running():
        say("starting the local Kubernetes cluster (the first run builds it; later runs reuse "
            "the cache)")
        run_script("cluster-up.sh", capture=False, timeout=None).check_returncode()
        started_cluster = True
    else:
        say("reusing the running local cluster")
    kube = local_kube()

    with contextlib.ExitStack() as stack:
        if started_cluster and not args.keep:
            stack.callback(run_script, "cluster-down.sh", capture=False, timeout=None)
            stack.callback(say, "stopping the local cluster (it was not running before)")
        say("building the helm CLI (cached after the first run)")
        helm = helm_binary()
        say("building the operator, runner, examples and Redis images from uv.lock "
            "(cached by their sources) and loading them into the cluster")
        load_images()

        inst = Installation(kube, helm, log=say)
        if not args.keep:
            stack.callback(inst.purge)
            stack.callback(say, f"helm uninstall {inst.release} -n {inst.namespace}; "
                           "deleting its namespace and the Redis volume")
        say(f"helm install {inst.release} charts/kflow -n {inst.namespace} --create-namespace "
            "--set redis.deploy=true  (+ this cluster's image names and a hostPath volume)")
        t0 = time.monotonic()
        inst.install()
        say(f"operator and Redis Ready {time.monotonic() - t0:.1f} s after helm install")
        print(kube("get", "deployments,pods,services", "-n", inst.namespace).stdout)

        kube("create", "namespace", NAMESPACE, check=False)
        if not args.keep:
            stack.callback(kube, "delete", "namespace", NAMESPACE, "--ignore-not-found",
                           check=False, timeout=180)
        say(f"(tenants are on with the bundled Redis: the operator makes Secret kflow-redis in "
            f"{NAMESPACE} with its own Redis user kflow-ns-{NAMESPACE} when the flow arrives)")

        pods_seen = JobWatch(kube, NAMESPACE, "pods")  # every node pod, also once deleted
        pods_seen.start()
        stack.callback(pods_seen.stop)
        say(f"kubectl -n {NAMESPACE} apply -f {EXAMPLE.relative_to(REPO)}")
        print(kube("-n", NAMESPACE, "apply", "-f", str(EXAMPLE)).stdout, end="")
        (flow,) = [o for o in load_manifests(EXAMPLE) if isinstance(o, Flow)]
        name = str(flow.metadata.name)
        t0 = time.monotonic()
        say(f"kubectl -n {NAMESPACE} wait --for=condition=Complete flow/{name}")
        waited = kube("wait", "--for=condition=Complete", f"flow/{name}", "-n", NAMESPACE,
                      f"--timeout={args.timeout}s", check=False, timeout=args.timeout + 30)
        body = kube.json("flow", name, "-n", NAMESPACE)
        status = body.get("status") or {}
        say(f"flow {NAMESPACE}/{name}: {status.get('phase')} ({status.get('progress')}) in "
            f"{time.monotonic() - t0:.1f} s")
        print(kube("get", "flows,queues", "-n", NAMESPACE).stdout)

        host = pods_seen.on_the_host()
        say(f"{len(pods_seen.made())} node pods ran, {len(host)} of them with host network or "
            "host mounts")

        # What a user bound only to `view` in the namespace sees, through the API server's
        # service proxy: the kubectl plugin, run by kubectl from PATH, with that user's token.
        token = service_account_token(kube, NAMESPACE, "demo-viewer", "view", NAMESPACE)
        api = f"{inst.namespace}/{inst.fullname}-api"
        say(f"kubectl kflow get {name} -n {NAMESPACE} --api {api} --token <demo-viewer's token>"
            "   (a ServiceAccount bound only to `view` in the namespace)")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "KUBECONFIG": str(cluster_dir() / "kubeconfig"), "KFLOW_TOKEN": token}
        got = subprocess.run([str(bin_dir() / "kubectl"), "kflow", "get", name, "-n", NAMESPACE,
                              "--api", api], env=env, capture_output=True, text=True,
                             timeout=120, check=False)
        print(got.stdout, end="")
        if got.returncode != 0:
            print(got.stderr, file=sys.stderr)
        if waited.returncode != 0 or host or got.returncode != 0:
            print(waited.stderr, file=sys.stderr)
            for pod in inst.operator_pods():
                logs = kube("-n", inst.namespace, "logs", pod["metadata"]["name"], "--tail=60",
                            check=False)
                print(logs.stdout, file=sys.stderr)
            return 1
    say(f"demo done in {time.monotonic() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
