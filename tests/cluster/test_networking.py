"""Pods without hostNetwork: cluster DNS, Service ClusterIPs, the API server through the
`kubernetes` Service, and no way off this machine (the egress rule of cluster-up.sh).

Every packet these tests make stays on this machine: the "outside" address is one of the
benchmark range (198.18.0.0/15) put on a dummy interface of the host for the test.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kflow.devkit.cluster import LocalCluster

pytestmark = pytest.mark.cluster

RUNNER = "localhost/kflow-runner:dev"
SERVICE_CIDR = ipaddress.ip_network(os.environ.get("KFLOW_SERVICE_CIDR", "10.96.0.0/24"))
POD_CIDR = ipaddress.ip_network(os.environ.get("KFLOW_POD_CIDR", "10.244.0.0/24"))
EGRESS_CHAIN = f"KFLOW-EGRESS-{os.environ.get('KFLOW_BRIDGE', 'kflow0')}"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def pod_manifest(name: str, code: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod on the pod network (no hostNetwork) running Python in the runner image."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": RUNNER, "command": ["python3", "-c", code]}],
        },
    }


def pod_phase(cluster: LocalCluster, ns: str, name: str) -> str:
    return str(cluster.get_json("pod", name, namespace=ns).get("status", {}).get("phase", ""))


def run_pod(cluster: LocalCluster, ns: str, name: str, code: str) -> dict[str, Any]:
    """Run `code` in a pod until it exits; it must succeed and print one JSON object last."""
    cluster.apply(pod_manifest(name, code), namespace=ns)
    phase = cluster.wait_until(
        f"pod {name} to finish",
        lambda: (p := pod_phase(cluster, ns, name)) in ("Succeeded", "Failed") and p,
        timeout=90,
    )
    logs = cluster.kubectl("-n", ns, "logs", name).stdout
    assert phase == "Succeeded", f"pod {name} {phase}:\n{logs}"
    result: dict[str, Any] = json.loads(logs.strip().splitlines()[-1])
    return result


@pytest.fixture
def web(kube_cluster: LocalCluster, kube_namespace: str) -> dict[str, str]:
    """A pod serving a file over HTTP on port 8080 behind Service `web` (port 80); its
    body is a fresh token, so an answer cannot come from anywhere else."""
    token = uuid.uuid4().hex
    server = pod_manifest(
        "web",
        "import http.server, os; os.makedirs('/tmp/www', exist_ok=True); "
        f"open('/tmp/www/index.html', 'w').write('{token}'); os.chdir('/tmp/www'); "
        "http.server.ThreadingHTTPServer(('', 8080), http.server.SimpleHTTPRequestHandler)"
        ".serve_forever()",
        labels={"app": "web"},
    )
    server["spec"]["containers"][0]["readinessProbe"] = {
        "tcpSocket": {"port": 8080},
        "periodSeconds": 1,
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kube_cluster.apply(server, namespace=kube_namespace)
    kube_cluster.apply(service, namespace=kube_namespace)
    kube_cluster.kubectl(
        "-n",
        kube_namespace,
        "wait",
        "--for=condition=Ready",
        "pod/web",
        "--timeout=90s",
        timeout=100,
    )
    cluster_ip = kube_cluster.get_json("service", "web", namespace=kube_namespace)["spec"][
        "clusterIP"
    ]
    assert ipaddress.ip_address(cluster_ip) in SERVICE_CIDR
    # kube-proxy writes the Service's rules once the endpoint is ready; wait for them.
    kube_cluster.wait_until(
        "kube-proxy to program Service web",
        lambda: (
            cluster_ip
            in subprocess.run(
                ["iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        ),
        timeout=30,
    )
    return {"token": token, "cluster_ip": cluster_ip}


def test_pod_resolves_cluster_names_and_nothing_outside(
    kube_cluster: LocalCluster, kube_namespace: str, web: dict[str, str]
) -> None:
    code = f"""
import json, socket
def resolve(name):
    try:
        return socket.gethostbyname(name)
    except socket.gaierror as exc:
        return "error: " + str(exc)
print(json.dumps({{
    "kubernetes": resolve("kubernetes.default.svc.cluster.local"),
    "web": resolve("web"),
    "web_fqdn": resolve("web.{kube_namespace}.svc.cluster.local"),
    "outside": resolve("kflow-no-such-host.invalid"),
    "resolv": open("/etc/resolv.conf").read(),
}}))
"""
    got = run_pod(kube_cluster, kube_namespace, "resolve", code)
    assert got["kubernetes"] == str(SERVICE_CIDR[1])
    assert got["web"] == got["web_fqdn"] == web["cluster_ip"]
    # No forwarding: CoreDNS answers only for the cluster, anything else fails right here.
    assert got["outside"].startswith("error:")
    kube_dns = kube_cluster.get_json("service", "kube-dns", namespace="kube-system")
    assert f"nameserver {kube_dns['spec']['clusterIP']}" in got["resolv"]
    corefile = kube_cluster.get_json("configmap", "coredns", namespace="kube-system")["data"]
    assert "forward" not in corefile["Corefile"]


def test_pod_reaches_a_service_by_cluster_ip_and_name(
    kube_cluster: LocalCluster, kube_namespace: str, web: dict[str, str]
) -> None:
    code = f"""
import json, urllib.request
get = lambda url: urllib.request.urlopen(url, timeout=10).read().decode()
print(json.dumps({{"by_ip": get("http://{web["cluster_ip"]}/"), "by_name": get("http://web/")}}))
"""
    got = run_pod(kube_cluster, kube_namespace, "client", code)
    assert got == {"by_ip": web["token"], "by_name": web["token"]}


def test_pod_reaches_itself_through_its_service(
    kube_cluster: LocalCluster, kube_namespace: str, web: dict[str, str]
) -> None:
    # Hairpin: the Service's only endpoint is the caller, so the packet leaves the pod, is
    # rewritten on the host and comes back to it. (Inside the pod the short name `web` is its
    # own hostname in /etc/hosts, hence the full name.)
    code = f"""
import urllib.request
for url in ("http://{web["cluster_ip"]}/", "http://web.{kube_namespace}.svc.cluster.local/"):
    print(urllib.request.urlopen(url, timeout=10).read().decode())
"""
    out = kube_cluster.kubectl("-n", kube_namespace, "exec", "web", "--", "python3", "-c", code)
    assert out.stdout.split() == [web["token"], web["token"]]


def test_pod_calls_the_api_server_through_the_kubernetes_service(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    code = f"""
import json, os, ssl, urllib.error, urllib.request
token = open("{SA_DIR}/token").read()
ctx = ssl.create_default_context(cafile="{SA_DIR}/ca.crt")
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
def get(url):
    req = urllib.request.Request(url, headers={{"Authorization": "Bearer " + token}})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
status, body = get("https://kubernetes.default.svc/api")
ns = open("{SA_DIR}/namespace").read()
pods_status, pods = get(f"https://{{host}}:{{port}}/api/v1/namespaces/{{ns}}/pods")
print(json.dumps({{"host": host, "port": port, "status": status, "kind": body.get("kind"),
                  "pods_status": pods_status, "pods_reason": pods.get("reason")}}))
"""
    got = run_pod(kube_cluster, kube_namespace, "apicall", code)
    assert got["host"] == str(SERVICE_CIDR[1]) and got["port"] == "443"
    # The certificate checks out against the cluster CA for the Service's name, and the token
    # is accepted: discovery is open to every authenticated account.
    assert (got["status"], got["kind"]) == (200, "APIVersions")
    # Listing pods is not granted to a default account: authenticated as it, then forbidden.
    assert (got["pods_status"], got["pods_reason"]) == (403, "Forbidden")


def egress_drops() -> int:
    """Packets counted by the egress chain's DROP rule (pod source, destination off-machine)."""
    out = subprocess.run(
        ["iptables", "-w", "-t", "raw", "-v", "-S", EGRESS_CHAIN],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if f"-s {POD_CIDR}" in line and line.rstrip().endswith("-j DROP"):
            m = re.search(r" -c (\d+) \d+", line)
            assert m, line
            return int(m.group(1))
    raise AssertionError(f"no egress DROP rule in {EGRESS_CHAIN}:\n{out}")


@pytest.fixture
def outside_listener() -> Iterator[tuple[str, int, list[str]]]:
    """A TCP listener on an address of the benchmark range, on an interface of the host made
    for the test (a dummy one; a veth pair where the kernel has no dummy driver).

    The address stands for "anywhere off this machine" (pods must not reach it), yet it is the
    host's own: nothing is ever sent to a real outside host. Yields (address, port, peers seen).
    """
    suffix = uuid.uuid4().hex[:6]
    dev = f"kfout{suffix}"
    addr = f"198.18.{int(suffix[:2], 16)}.{1 + int(suffix[2:4], 16) % 254}"
    made = subprocess.run(["ip", "link", "add", dev, "type", "dummy"], capture_output=True)
    if made.returncode != 0:
        subprocess.run(
            ["ip", "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p"], check=True
        )
    try:
        subprocess.run(["ip", "addr", "add", f"{addr}/32", "dev", dev], check=True)
        subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        srv = socket.create_server((addr, 0))
        port = srv.getsockname()[1]
        peers: list[str] = []

        def accept() -> None:
            while True:
                try:
                    conn, peer = srv.accept()
                except OSError:
                    return
                peers.append(peer[0])
                conn.close()

        threading.Thread(target=accept, daemon=True).start()
        try:
            yield addr, port, peers
        finally:
            srv.close()
    finally:
        subprocess.run(["ip", "link", "delete", dev], check=False)


def test_pod_cannot_reach_beyond_this_machine(
    kube_cluster: LocalCluster, kube_namespace: str, outside_listener: tuple[str, int, list[str]]
) -> None:
    addr, port, peers = outside_listener
    # Control: the listener is there and the host itself reaches it.
    with socket.create_connection((addr, port), timeout=5):
        pass
    kube_cluster.wait_until("the host's connection to be accepted", lambda: peers, timeout=5)
    before = egress_drops()
    code = f"""
import json, socket
try:
    socket.create_connection(("{addr}", {port}), timeout=4).close()
    outcome = "connected"
except OSError as exc:
    outcome = type(exc).__name__ + ": " + str(exc)
print(json.dumps({{"outcome": outcome}}))
"""
    got = run_pod(kube_cluster, kube_namespace, "escape", code)
    # The SYN (and its retries) vanish: no answer, no connection, and the rule counted them.
    assert got["outcome"] != "connected"
    assert peers == [peers[0]] and ipaddress.ip_address(peers[0]) not in POD_CIDR
    assert egress_drops() > before
