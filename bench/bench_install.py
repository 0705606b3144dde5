"""kflow installed the way users install it, on the local cluster (`make cluster-up` first):

- `helm install` of charts/kflow with the bundled Redis -> both operator replicas and Redis
  Ready (helm --wait), then purged; `--installs` times;
- a node pod's start through the pod network vs with `hostNetwork`: create -> Succeeded of
  a `python3 -c pass` pod in the runner image, alternated, `--pods` pairs;
- `make demo` on the warm cache (`--demo`: one run of hack/demo.py, minus nothing).

Records the section "Installed with Helm (issue 10)" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from kflow.devkit.checkout import REPO
from kflow.devkit.cluster import cluster_running
from kflow.devkit.install import Installation, helm_binary, load_images
from kflow.devkit.operator import Kube, local_kube
from kflow.devkit.results import record, table


def time_install(kube: Kube, helm: str) -> float:
    suffix = uuid.uuid4().hex[:6]
    inst = Installation(kube, helm, release=f"kflow-{suffix}", namespace=f"kflow-bench-{suffix}",
                        values=["--set", f"watchNamespaces={{kflow-bench-{suffix}}}"])
    try:
        t0 = time.monotonic()
        inst.install()
        return time.monotonic() - t0
    finally:
        inst.purge()


def pod(name: str, host_network: bool) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "hostNetwork": host_network,
                     "containers": [{"name": "main", "image": "localhost/kflow-runner:dev",
                                     "imagePullPolicy": "Never",
                                     "command": ["python3", "-c", "pass"]}]}}


def time_pod(kube: Kube, namespace: str, name: str, host_network: bool) -> float:
    t0 = time.monotonic()
    kube.apply(pod(name, host_network), namespace)
    while True:
        phase = kube("get", "pod", name, "-n", namespace, "-o",
                     "jsonpath={.status.phase}").stdout
        if phase in ("Succeeded", "Failed"):
            assert phase == "Succeeded", f"pod {name} failed"
            return time.monotonic() - t0
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--installs", type=int, default=2)
    parser.add_argument("--pods", type=int, default=6)
    parser.add_argument("--demo", action="store_true", help="also time one `make demo`")
    args = parser.parse_args()
    if not cluster_running():
        print("the local cluster is not running: make cluster-up", file=sys.stderr)
        return 1
    kube = local_kube()
    helm = helm_binary()
    load_images()
    installs = [time_install(kube, helm) for _ in range(args.installs)]

    namespace = f"kflow-bench-pods-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", namespace)
    host: list[float] = []
    pods: list[float] = []
    try:
        for i in range(args.pods):
            host.append(time_pod(kube, namespace, f"host-{i}", True))
            pods.append(time_pod(kube, namespace, f"pod-{i}", False))
    finally:
        kube("delete", "namespace", namespace, "--wait=false", check=False)

    rows = [
        ["`helm install` (bundled Redis) to operator replicas and Redis Ready",
         ", ".join(f"{t:.1f} s" for t in installs)],
        [f"node pod create -> Succeeded, hostNetwork (median of {len(host)})",
         f"{statistics.median(host):.2f} s"],
        [f"node pod create -> Succeeded, pod network (median of {len(pods)})",
         f"{statistics.median(pods):.2f} s"],
        ["pod network / hostNetwork", f"{statistics.median(pods) / statistics.median(host):.2f}"],
    ]
    if args.demo:
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, str(REPO / "hack" / "demo.py")], check=False,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows.append(["`make demo`'s work (hack/demo.py), cluster running, caches warm",
                     f"{time.monotonic() - t0:.0f} s"])
    record("Installed with Helm (issue 10)", table(["what", "figure"], rows) + """

The user's path on the local cluster: images from uv.lock loaded into containerd, charts/kflow
installed by the real helm with the bundled Redis on a hostPath volume, pods on the pod
network (bridge, kube-proxy, CoreDNS). The pods pair alternates a `hostNetwork` pod and a
pod-network pod of the same image and command, so both see the same machine load.""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
