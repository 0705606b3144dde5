"""The operator's memory and CPU with 1,000 Flows of 100 nodes admitted (issue 15).

Needs the local cluster (`make cluster-up`). Starts a private Redis and the operator as a
process (kflow.devkit.operator), creates the Flows with the Kubernetes client from a few
threads, and samples the operator's RSS and CPU time (/proc/<pid>/stat, user + system) in
three phases:
- admission: from the first create to every Flow Running (graph recorded in Redis);
- steady: a minute with every Flow admitted and nothing running;
- running: the Queue appears (Job mode, low concurrency): pods run, the other nodes wait.
The Flows' nodes are on a Queue that does not exist until the running phase, so admission
and the steady minute are the operator's bookkeeping alone, and the running phase adds
real Job pods without 100,000 of them. The API server's and etcd's CPU time during the
creates is read the same way (they are processes of the local cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.api.ids import FlowId
from kflow.devkit.manifests import flow, queue
from kflow.devkit.operator import Scenario, bench_world
from kflow.devkit.procs import cpu_seconds, pid_of, rss_kib
from kflow.devkit.results import record, table

SECTION = "Operator: memory and CPU with 1,000 flows of 100 nodes (issue 15)"
QUEUE = "wide"
# The figure bench_operator.py recorded for 100 flows of 100 nodes (RESULTS.md, 2026-11-29).
EARLIER = {"flows": 100, "idle_mib": 164, "peak_mib": 180}








@dataclass
class Phase:
    name: str
    started: float
    cpu0: float
    cluster_cpu0: float
    ended: float = 0.0
    cpu: float = 0.0
    cluster_cpu: float = 0.0
    rss_peak: int = 0
    rss_end: int = 0


@dataclass
class Sampler:
    """Samples the operator's RSS every half second; phases read CPU at their edges."""

    pid: int
    cluster_pids: list[int]
    phases: list[Phase] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def cluster_cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.cluster_pids)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if self.phases and not self.phases[-1].ended:
                current = self.phases[-1]
                current.rss_peak = max(current.rss_peak, rss_kib(self.pid))

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        current = Phase(name, time.monotonic(), cpu_seconds(self.pid), self.cluster_cpu(),
                        rss_peak=rss_kib(self.pid))
        self.phases.append(current)
        try:
            yield current
        finally:
            current.rss_end = rss_kib(self.pid)
            current.rss_peak = max(current.rss_peak, current.rss_end)
            current.cpu = cpu_seconds(self.pid) - current.cpu0
            current.cluster_cpu = self.cluster_cpu() - current.cluster_cpu0
            current.ended = time.monotonic()

    def stop(self) -> None:
        self._stop.set()


class FlowPhases:
    """`kubectl get flows --watch`: each Flow's latest phase, without listing 1,000 objects
    again and again (the API server is one of the two cores' tenants). A watch the server
    ends is opened again (it starts with the current list)."""

    def __init__(self, scenario: Scenario) -> None:
        kube = scenario.kube
        self.phases: dict[str, str] = {}
        self._command = [kube.kubectl, "--kubeconfig", str(kube.kubeconfig), "get", "flows",
                         "-n", scenario.namespace, "--watch", "--no-headers", "-o",
                         "custom-columns=N:.metadata.name,P:.status.phase"]
        self._stopped = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._stopped.is_set():
            self._proc = subprocess.Popen(self._command, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                parts = line.split()
                if len(parts) == 2:
                    self.phases[parts[0]] = parts[1]
            self._proc.wait()
            self._stopped.wait(1.0)

    def count(self, phase: str) -> int:
        return sum(1 for p in list(self.phases.values()) if p == phase)

    def __str__(self) -> str:
        return str(Counter(self.phases.values()))

    def stop(self) -> None:
        self._stopped.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


def wide_flow(index: int, nodes: int) -> dict[str, Any]:
    """One parent over nodes - 1 children, all on QUEUE (as bench_operator's memory figure)."""
    children = [{"name": f"item-{i}", "queue": QUEUE, "data": {"i": i}}
                for i in range(nodes - 1)]
    doc = flow(f"wide-{index:04d}", [{"name": "total", "queue": QUEUE, "children": children}])
    return doc


def create_flows(scenario: Scenario, docs: list[dict[str, Any]], threads: int) -> None:
    """Create the Flows with the Kubernetes client, `threads` requests in flight."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(scenario.kube.kubeconfig))
    api_client.configuration.connection_pool_maxsize = threads
    api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = threads
    objects = client.CustomObjectsApi(api_client)

    def create(doc: dict[str, Any]) -> None:
        objects.create_namespaced_custom_object("kflow.dev", "v1alpha1", scenario.namespace,
                                                "flows", doc, _request_timeout=120)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(create, docs))
    api_client.close()


def recorded(scenario: Scenario) -> int:
    return scenario.operator.log_tail(10**7).count("nodes recorded in Redis")


def wait_until(what: str, done: Callable[[], bool], timeout: float, scenario: Scenario,
               extra: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({extra()})\n"
                                 f"{scenario.operator.log_tail()}")
        time.sleep(1)


def nodes_done(scenario: Scenario) -> int:
    """Nodes finished over every Flow of the scenario, read from Redis by the engine."""
    out = scenario.kube("get", "flows", "-n", scenario.namespace, "--no-headers", "-o",
                        "custom-columns=U:.metadata.uid", timeout=300).stdout

    async def read() -> int:
        import redis.asyncio as aioredis

        from kflow.engine import Engine

        client = aioredis.Redis.from_url(scenario.redis_url)
        try:
            engine = Engine(client, prefix=scenario.prefix)
            done = 0
            for uid in out.split():
                done += (await engine.snapshot(FlowId.of(scenario.namespace, uid))).done
            return done
        finally:
            await client.aclose()

    return asyncio.run(read())


def flow_names(scenario: Scenario) -> int:
    out = scenario.kube("get", "flows", "-n", scenario.namespace, "-o", "name",
                        check=False, timeout=300).stdout
    return len(out.split())


def measure(scenario: Scenario, flows: int, nodes: int, concurrency: int, threads: int,
            steady_s: float, running_s: float, profile: Path | None, keep: bool) -> None:
    assert scenario.operator.proc is not None
    pid = scenario.operator.proc.pid
    time.sleep(10)  # the operator's imports and watches, before the baseline
    apiserver, etcd = pid_of("kube-apiserver"), pid_of("etcd")
    sampler = Sampler(pid, [p for p in (apiserver, etcd) if p is not None])
    idle = rss_kib(pid)
    sampler.start()
    watch = FlowPhases(scenario)
    spy: subprocess.Popen[bytes] | None = None
    docs = [wide_flow(f, nodes) for f in range(flows)]
    size_kib = sum(len(json.dumps(d)) for d in docs) / flows / 1024
    if profile is not None:
        spy = subprocess.Popen([str(profile), "record", "--pid", str(pid), "--nonblocking",
                                "--rate", "50", "--format", "raw", "--output",
                                "/tmp/kflow-opscale-admission.txt"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with sampler.phase("admission") as admission:
            with sampler.phase("creates") as creates:
                create_flows(scenario, docs, threads)
            wait_until("every Flow Running", lambda: watch.count("Running") >= flows,
                       timeout=flows * 3.0, scenario=scenario, extra=lambda: f"{watch}; now: " + (
                           scenario.kube("get", "flows", "-n", scenario.namespace, "-o",
                                         "custom-columns=N:.metadata.name,P:.status.phase,"
                                         "C:.status.conditions[*].reason", check=False).stdout))
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        in_redis = recorded(scenario)
        with sampler.phase("steady") as steady:
            time.sleep(steady_s)
        jobs = scenario.watch_jobs()
        with sampler.phase("running") as running:
            scenario.kube.apply(queue(QUEUE, "echo", concurrency=concurrency), scenario.namespace)
            time.sleep(running_s)
        made = len(jobs.created(QUEUE))
        succeeded = nodes_done(scenario)
        jobs.stop()
        with sampler.phase("deletion") as deletion:
            scenario.kube("delete", "flows", "--all", "-n", scenario.namespace, "--wait=false",
                          timeout=300)
            wait_until("every Flow deleted", lambda: flow_names(scenario) == 0,
                       timeout=flows * 2.0, scenario=scenario)
    finally:
        watch.stop()
        sampler.stop()

    admit_s = admission.ended - admission.started
    create_s = creates.ended - creates.started
    mib = 1024.0
    rows = [
        ["admission (create -> all Running)", f"{admit_s:.0f} s",
         f"{admission.rss_peak / mib:.0f} MiB", f"{admission.rss_end / mib:.0f} MiB",
         f"{admission.cpu:.1f} s", f"{admission.cpu / admit_s:.0%}"],
        ["steady (admitted, nothing running)", f"{steady_s:.0f} s",
         f"{steady.rss_peak / mib:.0f} MiB", f"{steady.rss_end / mib:.0f} MiB",
         f"{steady.cpu:.1f} s", f"{steady.cpu / steady_s:.0%}"],
        [f"running (Queue concurrency {concurrency}: {made} Jobs, {succeeded} nodes done)",
         f"{running_s:.0f} s", f"{running.rss_peak / mib:.0f} MiB",
         f"{running.rss_end / mib:.0f} MiB", f"{running.cpu:.1f} s",
         f"{running.cpu / running_s:.0%}"],
        ["deletion (delete --all -> none left)", f"{deletion.ended - deletion.started:.0f} s",
         f"{deletion.rss_peak / mib:.0f} MiB", f"{deletion.rss_end / mib:.0f} MiB",
         f"{deletion.cpu:.1f} s", f"{deletion.cpu / (deletion.ended - deletion.started):.0%}"],
    ]
    per_flow_kib = (steady.rss_end - idle) / flows
    earlier_kib = (EARLIER["peak_mib"] - EARLIER["idle_mib"]) * 1024 / EARLIER["flows"]
    body = table(["phase", "wall", "operator RSS peak", "RSS at end", "operator CPU",
                  "CPU share of one core"], rows)
    body += "\n\n" + table(
        ["flows x nodes", "recorded in Redis", "RSS idle (started, no Flow)",
         "KiB per flow (steady - idle)", "operator CPU per flow admitted",
         "admission rate", "API server: creates", "kube-apiserver + etcd CPU in creates"],
        [[f"{flows:,} x {nodes} = {flows * nodes:,}", f"{in_redis:,}/{flows:,}",
          f"{idle / mib:.0f} MiB", f"{per_flow_kib:.0f} KiB",
          f"{admission.cpu / flows * 1000:.0f} ms", f"{flows / admit_s:.1f} flows/s",
          f"{create_s:.0f} s ({flows / create_s:.1f} Flows/s, {threads} threads, "
          f"{size_kib:.1f} KiB each)", f"{creates.cluster_cpu:.0f} s"]])
    body += f"""

The Flows (one parent over {nodes - 1} children, as the 100 x 100 figure of issue 4) are
created with the Kubernetes client, {threads} requests in flight. Their nodes are on Queue
`{QUEUE}`, which does not exist during admission and the steady minute: every node is recorded
and waits in Redis, the Flows are Running with a QueueMissing condition, and nothing but the
operator's bookkeeping runs (status, watches, timers). The running phase creates the Queue
(Job mode, concurrency {concurrency}, a no-op Python node): pods really run while the other
~{flows * nodes:,} nodes wait. RSS is sampled every 0.5 s; CPU is user + system from
/proc/<pid>/stat at each phase's edges. Compared with issue 4's {EARLIER['flows']} x 100
(RSS {EARLIER['idle_mib']} -> {EARLIER['peak_mib']} MiB, {earlier_kib:.0f} KiB per flow): the
steady RSS grows by {(steady.rss_end - idle) / mib:.0f} MiB for {flows:,} flows."""
    if keep:
        record(SECTION, body)
    else:
        print(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="creates in flight")
    parser.add_argument("--steady", type=float, default=60.0)
    parser.add_argument("--running", type=float, default=120.0)
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy binary: record the admission (figures then include it)")
    parser.add_argument("--dry-run", action="store_true", help="print, do not record")
    args = parser.parse_args()
    with bench_world() as world, world.scenario() as scenario:
        measure(scenario, args.flows, args.nodes, args.concurrency, args.threads,
                args.steady, args.running, args.profile,
                keep=not args.dry_run and (args.flows, args.nodes) == (1000, 100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
