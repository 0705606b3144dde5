"""Job mode on the local cluster (issue 15): the per-step time of a chain against a bare
pod, and how fast the operator creates Jobs for many ready flows.

Needs the local cluster (`make cluster-up`). Starts a private Redis and the operator as a
process (kflow.devkit.operator), and measures:
- chain: a 20-step chain of no-op Job pods, per step (each step one pod, one after the
  other), against a bare Pod of the same runner image and template running a no-op Python
  command, timed from its create call to the watch event showing its container terminated
  (and the same for a bare pod that only imports kflow-run's code);
- burst: 500 one-node Flows admitted while their Queue does not exist, then the Queue is
  applied: the Job creates per second (from a watch of the namespace's Jobs), the operator's
  CPU time and the API server's and etcd's over that window. The pods are made unschedulable
  (a nodeSelector no node has), so that the figure is the operator's and the API server's
  and not the kubelet's (the one node runs at most 110 pods); run once without a limit
  on the Queue and once with its rate limiter.

`--label before` (run from a checkout of the old operator) only saves the chain figures in
/tmp; a later run records them beside its own.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes

from kflow.devkit.manifests import flow, pod_template, queue
from kflow.devkit.operator import Scenario, bench_world
from kflow.devkit.procs import cpu_seconds, pid_of
from kflow.devkit.results import record, table

CHAIN_SECTION = "Operator: Job-mode step time vs a bare pod (issue 15)"
BURST_SECTION = "Operator: Job creates per second for 500 ready flows (issue 15)"
SAVED = Path(tempfile.gettempdir()) / "kflow-bench-job-mode-{label}.json"
BARE_RUNS = 12
# The local cluster's processes (their /proc comm names, cut at 15 characters).
CLUSTER_PROCESSES = ("kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kubelet")






K8S: Any = kubernetes  # the client's functions are untyped


def core_api(scenario: Scenario) -> Any:
    K8S.config.load_kube_config(str(scenario.kube.kubeconfig))
    return K8S.client.CoreV1Api()


# ---- chain ------------------------------------------------------------------------------
def bare_pod_seconds(scenario: Scenario, command: list[str], runs: int) -> list[float]:
    """Create-to-container-exit of bare Pods, one after the other: from the create call to
    the watch event that shows the container terminated."""
    core = core_api(scenario)
    template = pod_template(command=command)
    seconds = []
    for i in range(runs):
        name = f"bare-{i}-{int(time.time() * 1000) % 100000}"
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {**template["spec"], "restartPolicy": "Never"}}
        stream = K8S.watch.Watch()
        ended: list[float] = []

        def wait_exit(stream: Any = stream, name: str = name,
                      ended: list[float] = ended) -> None:
            for event in stream.stream(core.list_namespaced_pod, scenario.namespace,
                                       field_selector=f"metadata.name={name}",
                                       timeout_seconds=120):
                for status in event["object"].status.container_statuses or []:
                    if status.state.terminated is not None:
                        ended.append(time.monotonic())
                        stream.stop()
                        return

        watcher = threading.Thread(target=wait_exit, daemon=True)
        watcher.start()
        # The watch is open before the create; a random phase, because the kubelet notices a
        # container's exit on its once-a-second relist: pods made in step with it would all
        # show the same share of that second.
        time.sleep(0.5 + random.uniform(0, 1))
        started = time.monotonic()
        core.create_namespaced_pod(scenario.namespace, body)
        watcher.join(timeout=130)
        assert ended, f"bare pod {name} did not finish"
        seconds.append(ended[0] - started)
        core.delete_namespaced_pod(name, scenario.namespace, grace_period_seconds=0)
    return seconds


def chain_seconds(scenario: Scenario, length: int) -> dict[str, float]:
    """Apply a chain; wall time per step, and per step between the first and last finish
    (Redis's clock: the steady cycle, without admission)."""
    nodes: list[dict[str, Any]] = [
        {"name": f"step-{i}", "queue": "chain", "data": {"value": i},
         **({"children": [f"step-{i - 1}"]} if i else {})}
        for i in range(length)]
    scenario.apply(queue("chain", "add_one"))
    time.sleep(3)  # the Queue is served before the flow arrives
    name = f"chain-{length}-{int(time.time()) % 100000}"
    started = time.monotonic()
    scenario.apply(flow(name, nodes))
    body = scenario.wait_phase(name, timeout=length * 30)
    wall = time.monotonic() - started
    assert body["status"]["phase"] == "Succeeded", body["status"]
    infos = scenario.nodes(name)
    first, last = infos["step-0"].finished_ms, infos[f"step-{length - 1}"].finished_ms
    assert first is not None and last is not None
    return {"wall_per_step": wall / length, "cycle": (last - first) / 1000 / (length - 1)}


def chain(scenario: Scenario, length: int, runs: int) -> dict[str, Any]:
    chains = [chain_seconds(scenario, length) for _ in range(runs)]
    bare = bare_pod_seconds(scenario, ["python3", "-c", "pass"], BARE_RUNS)
    bare_import = bare_pod_seconds(
        scenario, ["python3", "-c", "import kflow.sdk.run, kflow.store.connect"], BARE_RUNS)
    return {
        "wall_per_step": statistics.median(c["wall_per_step"] for c in chains),
        "cycle": statistics.median(c["cycle"] for c in chains),
        "runs": runs, "length": length,
        "bare": statistics.mean(bare), "bare_import": statistics.mean(bare_import),
        "bare_range": [min(bare), max(bare)],
    }


def record_chain(after: dict[str, Any], before: dict[str, Any] | None) -> None:
    rows = []
    bare = after["bare"]  # a bare pod does not depend on the operator: one figure for both
    for label, figures in (("before (the Job's Complete condition)", before),
                           ("after (the pod's own exit)", after)):
        if figures is None:
            continue
        rows.append([label, f"{figures['cycle']:.2f} s", f"{figures['wall_per_step']:.2f} s",
                     f"{bare:.2f} s", f"{figures['cycle'] / bare:.2f}x"])
    record(CHAIN_SECTION, table(
        ["operator", "per step (finish to finish)", "per step (apply to Succeeded / 20)",
         "bare pod, create to exit", "step / bare pod"], rows) + f"""

A {after['length']}-step chain of no-op Python nodes (`add_one`), one Job pod per step, median
of {after['runs']} runs; "finish to finish" is the step-0 to step-19 span of the nodes'
finish times (Redis's clock) / 19. The bare pod is a Pod of the same runner image and
template (host network, the checkout mounted) running `python3 -c pass`, timed from the
create call to the watch event showing its container terminated, mean of {BARE_RUNS} made at a
random phase (from {after['bare_range'][0]:.2f} to {after['bare_range'][1]:.2f} s: the kubelet
notices an exit on its once-a-second relist, so single pods fall near 0.5 or 1.5 s); the same
pod importing kflow-run's modules (`import kflow.sdk.run, kflow.store.connect`) takes
{after['bare_import']:.2f} s: a step also runs kflow-run (Redis connect, data and inputs read,
result stored) and the operator's record and Job create.""")


# ---- burst ------------------------------------------------------------------------------
def burst(scenario: Scenario, flows: int, rate: tuple[int, str] | None) -> dict[str, Any]:
    """Admit `flows` one-node Flows on a Queue that does not exist yet, then apply it and
    time the Job creates."""
    assert scenario.operator.proc is not None
    operator_pid = scenario.operator.proc.pid
    cluster = {c: pid_of(c) for c in CLUSTER_PROCESSES}
    docs = [flow(f"one-{i:04d}", [{"name": "only", "queue": "burst", "data": {"value": i}}])
            for i in range(flows)]
    for start in range(0, flows, 100):
        scenario.apply(*docs[start:start + 100])
    scenario.wait_for(f"{flows} Flows admitted", lambda: sum(
        1 for f in scenario.kube.json("flows", "-n", scenario.namespace).get("items") or []
        if (f.get("status") or {}).get("phase") == "Running") == flows, timeout=900)
    time.sleep(5)  # the operator settles before the window opens
    unschedulable = queue("burst", "add_one", rate=rate)
    unschedulable["spec"]["template"]["spec"]["nodeSelector"] = {"kflow.dev/bench": "nowhere"}
    jobs = scenario.watch_jobs()
    cpu0 = cpu_seconds(operator_pid)
    cluster0 = {c: cpu_seconds(p) for c, p in cluster.items() if p}
    opened = time.monotonic()
    seen: list[float] = []
    scenario.apply(unschedulable)
    deadline = opened + 900
    while time.monotonic() < deadline:
        made = len(jobs.created(queue="burst"))
        while len(seen) < made:
            seen.append(time.monotonic())
        if made >= flows:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - opened
    cpu = cpu_seconds(operator_pid) - cpu0
    cluster_cpu = {c: cpu_seconds(p) - cluster0[c] for c, p in cluster.items() if p}
    assert len(seen) >= flows, f"only {len(seen)} of {flows} Jobs created in {elapsed:.0f}s"
    span = seen[-1] - seen[0]
    return {"flows": flows, "rate": rate, "first_job": seen[0] - opened, "span": span,
            "per_second": (flows - 1) / span if span else float("inf"),
            "operator_cpu": cpu / elapsed, "cluster_cpu": {c: v / elapsed
                                                           for c, v in cluster_cpu.items()},
            "elapsed": elapsed}


def record_burst(runs: list[dict[str, Any]]) -> None:
    rows = []
    for run in runs:
        limiter = "none (no concurrency, no rate limit)" if run["rate"] is None else \
            f"rateLimit {run['rate'][0]} per {run['rate'][1]}"
        cluster = run["cluster_cpu"]
        rows.append([limiter, f"{run['per_second']:.1f}", f"{run['first_job']:.1f} s",
                     f"{run['operator_cpu'] * 100:.0f}%",
                     f"{cluster.get('kube-apiserver', 0) * 100:.0f}%",
                     f"{cluster.get('etcd', 0) * 100:.0f}%",
                     f"{cluster.get('kube-controller', 0) * 100:.0f}%",
                     f"{cluster.get('kube-scheduler', 0) * 100:.0f}%",
                     f"{cluster.get('kubelet', 0) * 100:.0f}%"])
    record(BURST_SECTION, table(
        ["Queue limiter", "Jobs created / s", "Queue applied -> first Job",
         "operator CPU", "kube-apiserver CPU", "etcd CPU", "controller-manager CPU",
         "scheduler CPU", "kubelet CPU"],
        rows) + f"""

{runs[0]['flows']} one-node Flows admitted (Running, their node ready) while their Queue did
not exist; then the Queue is applied and the Jobs the operator creates are timed by a watch
of the namespace's Jobs (first to last create). CPU is each process's user + system time
over the window from the Queue's apply to the last create, as a share of one core (the
machine has 2). The pods are unschedulable (a nodeSelector no node has), so the kubelet does
no work: with pods that run, the one node's kubelet starts at most 110 pods at a time and a
few per second, far fewer than the Jobs created.

{burst_verdict(runs)}""")


def burst_verdict(runs: list[dict[str, Any]]) -> str:
    """What limited the Job creates, read from the figures."""
    free = next(r for r in runs if r["rate"] is None)
    apiserver = free["cluster_cpu"].get("kube-apiserver", 0.0)
    busy = free["operator_cpu"] + sum(free["cluster_cpu"].values())
    text = (f"Verdict: without a limiter the operator created {free['per_second']:.0f} Jobs/s, "
            f"and the two cores were the limit: the processes measured used {busy:.1f} cores "
            f"of 2, the API server the most ({apiserver:.2f} core), the operator "
            f"{free['operator_cpu']:.2f} core (kopf, the Job create calls in threads, one "
            "Redis take per batch); etcd and the controllers little. The kubelet is not on "
            "this path.")
    for run in runs:
        if run["rate"] is None:
            continue
        max_, per = run["rate"]
        seconds = float(per.removesuffix("s")) if per.endswith("s") else 60.0
        expected = max_ / seconds
        text += (f" With rateLimit {max_} per {per} the Queue allows {expected:.0f} Jobs/s; "
                 f"measured {run['per_second']:.1f}.")
        if run["per_second"] < expected / 2:
            text += (" The dispatcher (kflow.kube.dispatch) computes the wait for the next "
                     "rate window only after a take that returned nothing; a take that got "
                     "the window's `max` nodes waits for its next timed wake-up instead (a "
                     "third of the lease, 10 s here), so a rate-limited Queue starts `max` "
                     "nodes per wake-up, not per `per`.")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["chain", "burst"])
    parser.add_argument("--label", default="after",
                        help="'before': save the chain figures only (run from the old checkout)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flows", type=int, default=500)
    parser.add_argument("--rate", default="20/1s", help="the limited burst run: max/per")
    args = parser.parse_args()
    with bench_world() as world:
        if args.only in (None, "chain"):
            with world.scenario() as scenario:
                figures = chain(scenario, 20, args.runs)
            print(json.dumps(figures))
            Path(str(SAVED).format(label=args.label)).write_text(json.dumps(figures))
            if args.label != "before":
                saved = Path(str(SAVED).format(label="before"))
                before = json.loads(saved.read_text()) if saved.exists() else None
                record_chain(figures, before)
        if args.only in (None, "burst") and args.label != "before":
            runs = []
            max_, per = args.rate.split("/")
            for rate in (None, (int(max_), per)):
                with world.scenario() as scenario:
                    runs.append(burst(scenario, args.flows, rate))
                print(json.dumps(runs[-1]))
            record_burst(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
