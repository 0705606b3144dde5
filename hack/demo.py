"""`make demo`: run the order workflow end to end on a real cluster, print its nodes, clean up.

Brings up what is missing — the local cluster (tests/cluster), a private redis-server, the
CRDs, the operator as a process — creates examples/order-workflow.yaml, waits with
`kubectl wait --for=condition=Complete`, prints every node with its result, then removes
everything it started (a cluster that was already running is left running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from kflow.api import Flow, load_manifests
from kflow.cli.local.view import render_tree
from kflow.devkit.checkout import REPO
from kflow.devkit.cluster import bin_dir, cluster_dir, cluster_running, run_script
from kflow.devkit.manifests import runnable_examples
from kflow.devkit.operator import OperatorWorld, kubectl_from_kubeconfig
from kflow.devkit.redis import redis_server
from kflow.engine import Engine
from kflow.graph import compile_flow
from kflow.store.connect import connect

EXAMPLE = REPO / "examples" / "order-workflow.yaml"


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


async def node_infos(redis_url: str, uid: str) -> dict[str, object]:
    client = await connect(redis_url)
    try:
        return dict(await Engine(client).node_infos(uid))
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=int, default=600, help="seconds to wait for the flow")
    args = parser.parse_args()

    started_cluster = False
    if not cluster_running():
        say("starting the local Kubernetes cluster (the first run builds it; later runs reuse "
            "the cache)")
        run_script("cluster-up.sh", capture=False, timeout=None).check_returncode()
        started_cluster = True
    else:
        say("reusing the running local cluster")
    kubeconfig = cluster_dir() / "kubeconfig"
    kubectl_bin = bin_dir() / "kubectl"
    kube = kubectl_from_kubeconfig(kubeconfig, str(kubectl_bin))

    with contextlib.ExitStack() as stack:
        if started_cluster:
            stack.callback(run_script, "cluster-down.sh", capture=False, timeout=None)
            stack.callback(say, "stopping the local cluster (it was not running before)")
        srv = stack.enter_context(redis_server())
        say(f"Redis at {srv.url}")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kflow-demo-")))
        world = OperatorWorld(kube, srv.url, tmp)
        say("installing the CRDs")
        world.install_crds()
        # On exit: deletes the namespace, stops the operator.
        scenario = stack.enter_context(world.scenario())
        say(f"operator running, watching namespace {scenario.namespace} "
            f"(log: {scenario.operator.log_path})")

        docs = runnable_examples(EXAMPLE)
        (flow_doc,) = [d for d in docs if d["kind"] == "Flow"]
        name = flow_doc["metadata"]["name"]
        say(f"kubectl create -f {EXAMPLE.relative_to(REPO)}  (the Flow is created, its Queues "
            "applied; Queues adapted to this cluster: host network to reach Redis, repository "
            "mounted)")
        scenario.apply(*docs)
        t0 = time.monotonic()
        waited = kube("wait", "--for=condition=Complete", f"flow/{name}", "-n",
                      scenario.namespace, f"--timeout={args.timeout}s", check=False,
                      timeout=args.timeout + 30)
        body = scenario.get_flow(name)
        status = body.get("status") or {}
        say(f"flow {scenario.namespace}/{name}: {status.get('phase')} "
            f"({status.get('progress')}) in {time.monotonic() - t0:.1f} s")
        print(kube("get", "flows,queues", "-n", scenario.namespace).stdout)

        (flow,) = [o for o in load_manifests(EXAMPLE) if isinstance(o, Flow)]
        compiled = compile_flow(flow)
        infos = asyncio.run(node_infos(srv.url, body["metadata"]["uid"]))
        print("\n".join(render_tree(compiled, infos)))  # type: ignore[arg-type]
        if waited.returncode != 0:
            print(waited.stderr, file=sys.stderr)
            print(scenario.operator.log_tail(), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
