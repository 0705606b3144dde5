"""cluster-down leaves nothing behind and the cluster comes up again from the cached binaries.

This runs a second, private cluster instance (own dirs, ports, bridge, node address), so
stopping it never disturbs the shared cluster other tests and sessions are using.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kflow.devkit.cluster import LocalCluster, bin_dir, cluster_running, run_script

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLUSTER_DIR = Path("/var/lib/kflow-cluster-lifecycle")
RUN_DIR = Path("/run/kflow-cluster-lifecycle")
BRIDGE = "kflow1"
ENV = {
    "KFLOW_CLUSTER_DIR": str(CLUSTER_DIR),
    "KFLOW_RUN_DIR": str(RUN_DIR),
    "KFLOW_NODE_NAME": "127.0.0.2",
    "KFLOW_BRIDGE": BRIDGE,
    "KFLOW_POD_CIDR": "10.244.1.0/24",
    "KFLOW_API_PORT": "6543",
    "KFLOW_ETCD_PORT": "12479",
    "KFLOW_KUBELET_PORT": "10350",
    "KFLOW_KUBELET_HEALTHZ_PORT": "10348",
    "KFLOW_CONTROLLER_PORT": "10357",
    "KFLOW_SCHEDULER_PORT": "10359",
    "KFLOW_CGROUP_NAME": "kflow-lifecycle",
    # No kube-proxy and no DNS: kube-proxy's iptables chains are host-wide, so a second one
    # would rewrite the shared cluster's Service rules. Its own egress chain it does have.
    "KFLOW_SERVICES": "0",
}
EGRESS_CHAIN = f"KFLOW-EGRESS-{BRIDGE}"


def cluster_pids() -> set[int]:
    """Processes whose command line names this instance's dirs: components and shims."""
    markers = (str(CLUSTER_DIR), str(RUN_DIR))
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in markers):
            pids.add(int(entry.name))
    return pids


def pod_pids() -> set[int]:
    """Processes inside this instance's pod cgroups (the containers themselves)."""
    root = (RUN_DIR / "cgroup-root").read_text().strip()
    pids = set()
    for procs in Path(f"/sys/fs/cgroup/pids{root}").rglob("cgroup.procs"):
        pids.update(int(p) for p in procs.read_text().split())
    return pids


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists()}


def cluster_mounts() -> list[str]:
    roots = (str(CLUSTER_DIR), str(RUN_DIR))
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if any(p == r or p.startswith(r + "/") for r in roots)]


def bridge_exists() -> bool:
    return subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0


def egress_chain_exists() -> bool:
    return all(
        subprocess.run([ipt, "-w", "-t", "raw", "-S", EGRESS_CHAIN], capture_output=True).returncode
        == 0
        for ipt in ("iptables", "ip6tables")
    )


def egress_chain_gone() -> bool:
    return not any(
        subprocess.run([ipt, "-w", "-t", "raw", "-S", EGRESS_CHAIN], capture_output=True).returncode
        == 0
        for ipt in ("iptables", "ip6tables")
    )


def up() -> subprocess.CompletedProcess[str]:
    proc = run_script("cluster-up.sh", env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def down() -> None:
    proc = run_script("cluster-down.sh", timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def second_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(
        kubeconfig=CLUSTER_DIR / "kubeconfig", bin_dir=bin_dir(), log_dir=CLUSTER_DIR / "logs"
    )
    try:
        yield cluster
    finally:
        run_script("cluster-down.sh", "--quiet", timeout=300, env=ENV)
        # Its image store is a copy of the shared one; logs and certificates stay for a look.
        shutil.rmtree(CLUSTER_DIR / "containerd", ignore_errors=True)


def run_pod(cluster: LocalCluster, name: str, *command: str) -> None:
    cluster.kubectl(
        "run",
        name,
        "--image=localhost/kflow-runner:dev",
        "--restart=Never",
        "--command",
        "--",
        *command,
    )


def test_up_down_up_leaves_nothing_and_reuses_the_cache(second_cluster: LocalCluster) -> None:
    kubelet = second_cluster.bin_dir / "kubelet"
    first = up()
    assert "binaries cached" in first.stdout  # the shared cache, built by an earlier run
    built_at = kubelet.stat().st_mtime_ns
    assert cluster_running(ENV)

    # A pod runs during the stop: there are mounts, a network namespace and a veth to clean.
    run_pod(second_cluster, "sleeper", "sleep", "3600")
    second_cluster.kubectl("wait", "--for=condition=Ready", "pod/sleeper", timeout=120)
    node = second_cluster.get_json("nodes")["items"][0]
    assert node["metadata"]["name"] == "127.0.0.2"
    before = cluster_pids() | pod_pids()
    assert len(before) > 6  # six components, shims, the pause process and the sleeper
    assert cluster_mounts()
    assert bridge_exists()
    assert egress_chain_exists()

    down()
    assert not cluster_running(ENV)
    assert cluster_pids() == set()
    assert alive(before) == set()
    assert cluster_mounts() == []
    assert not bridge_exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"master {BRIDGE}" not in links
    assert not RUN_DIR.exists()
    assert egress_chain_gone()

    again = up()
    assert "binaries cached" in again.stdout
    assert kubelet.stat().st_mtime_ns == built_at
    assert f"export KUBECONFIG={CLUSTER_DIR / 'kubeconfig'}" in again.stdout

    # The new cluster is fresh (nothing of the old one came back) and runs pods again.
    assert second_cluster.kubectl("get", "pod", "sleeper", check=False).returncode != 0
    nodes = json.loads(second_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = [c["status"] for c in nodes[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert ready == ["True"]
    run_pod(second_cluster, "again", "python3", "-c", "print('again')")
    second_cluster.wait_until(
        "pod again to succeed",
        lambda: (
            second_cluster.kubectl("get", "pod", "again", "-o", "jsonpath={.status.phase}").stdout
            == "Succeeded"
        ),
    )
    assert second_cluster.kubectl("logs", "again").stdout.strip() == "again"

    down()
    assert cluster_pids() == set()
    assert cluster_mounts() == []
    assert not bridge_exists()
    assert egress_chain_gone()
