"""Flows through kflow installed as users install it: `helm install` of charts/kflow with the
operator (2 replicas) and Redis as pods, node pods from the examples image on the cluster's
own network. The tests share one release and run in file order: the last one uninstalls.
"""

from __future__ import annotations

import collections
import json
import ssl
import time
import urllib.request
import uuid
from typing import Any

import pytest

from kflow.devkit.checkout import REPO
from kflow.devkit.operator import JobWatch
from tests.e2e.installed.conftest import EXAMPLES_IMAGE, Installed, until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TERMINAL = ("Succeeded", "Failed", "Cancelled")
WEBHOOK_PORT = 9443  # the chart's webhook.port


def flow_status(installed: Installed, name: str) -> dict[str, Any]:
    body = installed.kube.json("flow", name, "-n", installed.flows)
    return dict(body.get("status") or {})


def wait_phase(installed: Installed, name: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = flow_status(installed, name)
        if status.get("phase") in TERMINAL:
            return status
        time.sleep(1)
    raise AssertionError(f"flow {name} did not end in {timeout} s: {status}\n"
                         f"{operator_report(installed)}")


def operator_report(installed: Installed) -> str:
    """What a stuck flow's failure shows: who the peering says is active, and the tail of
    each operator pod's log."""
    inst = installed.inst
    peering = installed.kube("get", "kopfpeering", inst.fullname, "-n", installed.flows,
                             "-o", "jsonpath={.status}", check=False).stdout
    parts = [f"peering: {peering}"]
    for pod in inst.operator_pods():
        name = pod["metadata"]["name"]
        log = installed.kube("-n", inst.namespace, "logs", name, "--tail=80",
                             check=False).stdout
        restarts = sum(c.get("restartCount", 0)
                       for c in pod["status"].get("containerStatuses") or [])
        parts.append(f"--- {name} (started {pod['status'].get('startTime')}, "
                     f"{restarts} restarts)\n{log}")
    return "\n".join(parts)


def read_flow(installed: Installed, name: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(node -> NodeInfo, the flow's event stream) of the Flow `name`."""
    uid = installed.kube.json("flow", name, "-n", installed.flows)["metadata"]["uid"]
    return installed.inst.read_flow(installed.flows, uid)


def job_queue(name: str, handler: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": name},
            "spec": {"mode": "Job", **spec, "template": {"spec": {"containers": [
                {"name": "main", "image": EXAMPLES_IMAGE,
                 "command": ["kflow-run", f"examples.handlers:{handler}"]}]}}}}


def fan_out(name: str, items: int, *, item_queue: str, parent_queue: str,
            **spec: Any) -> dict[str, Any]:
    """examples/fan-out.yaml's shape with `items` children."""
    children = [{"name": f"item-{i}", "queue": item_queue,
                 "data": {"batchId": name, "index": i, "item": i}} for i in range(items)]
    return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow", "metadata": {"name": name},
            "spec": {**spec, "nodes": [{"name": "aggregate", "queue": parent_queue,
                                         "data": {"batchId": name, "totalItems": items},
                                         "children": children}]}}


def apply(installed: Installed, *docs: dict[str, Any]) -> None:
    installed.kube.apply(list(docs), installed.flows)


def test_the_order_workflow_runs_as_the_file_is(installed: Installed) -> None:
    watch = JobWatch(installed.kube, installed.flows, "pods")
    watch.start()
    try:
        installed.kube("-n", installed.flows, "apply", "-f",
                       str(REPO / "examples" / "order-workflow.yaml"))
        status = wait_phase(installed, "order-a17")
    finally:
        watch.stop()
    assert status["phase"] == "Succeeded", status
    infos, events = read_flow(installed, "order-a17")
    assert {n: i.state for n, i in infos.items()} == dict.fromkeys(infos, "completed")
    assert len(infos) == 8
    assert infos["process-payment"].result == {"paymentId": "pay-A-17", "charged": 55.0}
    # The diamond's payment node ran once although two parents wait on it.
    completed = collections.Counter(e["node"] for e in events if e["type"] == "completed")
    assert completed["process-payment"] == 1
    pods = [p for kind, p in watch.events if kind == "ADDED"]
    assert len({p["metadata"]["name"] for p in pods}) >= 8
    assert watch.on_the_host() == []


# Node code of a tenant that tries another namespace's flow with the credentials its pod got:
# read it, overwrite a result and a node state, and take from its queue (through a script).
TRESPASS = """
from kflow.api import FlowId, QueueId
from kflow.settings import RedisSettings
from kflow.store.connect import connect_to
from kflow.store.keys import flow_keys, queue_keys


async def trespass(job):
    settings = RedisSettings()
    redis = await connect_to(settings)
    theirs = flow_keys(settings.prefix, FlowId(job.data["namespace"], job.data["uid"]))
    queue = queue_keys(settings.prefix, QueueId(job.data["namespace"], "b-items"))
    tries = {
        "read": lambda: redis.hgetall(theirs.result),
        "overwrite": lambda: redis.hset(theirs.result, "item-0", '{"result": -1}'),
        "state": lambda: redis.hset(theirs.state, "aggregate", "ready"),
        # A script runs with its caller's rights (SCRIPT LOAD + EVALSHA are granted).
        "script": lambda: redis.register_script(
            "return redis.call('HGETALL', KEYS[1])")(keys=[theirs.meta]),
        "queue": lambda: redis.zadd(queue.ready, {"x|y": 0}),
    }
    outcome = {"user": settings.username}
    for name, attempt in tries.items():
        try:
            await attempt()
            outcome[name] = "allowed"
        except Exception as exc:
            outcome[name] = f"{type(exc).__name__}: {exc}"
    await redis.aclose()
    return outcome
"""
# kflow-run with the handler above as module `trespass` (the examples image has no such file).
TRESPASS_COMMAND = ("import os, sys, types; m = types.ModuleType('trespass'); "
                    "exec(os.environ['TRESPASS'], m.__dict__); sys.modules['trespass'] = m; "
                    "from kflow.sdk.run import main; sys.exit(main(['trespass:trespass']))")


def test_a_node_pod_gets_noperm_on_another_namespaces_flow_which_finishes_untouched(
        installed: Installed) -> None:
    kube, theirs_ns, mine_ns = installed.kube, installed.other, installed.flows
    kube.apply([job_queue("b-items", "process_item"), job_queue("b-sum", "aggregate_results")],
               theirs_ns)
    kube.apply([fan_out("theirs", 4, item_queue="b-items", parent_queue="b-sum")], theirs_ns)
    uid = kube.json("flow", "theirs", "-n", theirs_ns)["metadata"]["uid"]
    trespass = job_queue("a-trespass", "unused")
    trespass["spec"]["template"]["spec"]["containers"][0].update(
        command=["python3", "-c", TRESPASS_COMMAND], env=[{"name": "TRESPASS", "value": TRESPASS}])
    kube.apply([trespass, {
        "apiVersion": "kflow.dev/v1alpha1", "kind": "Flow", "metadata": {"name": "mine"},
        "spec": {"nodes": [{"name": "trespass", "queue": "a-trespass",
                            "data": {"namespace": theirs_ns, "uid": uid}}]}}], mine_ns)

    status = wait_phase(installed, "mine")
    assert status["phase"] == "Succeeded", (
        json.dumps(status) + kube("get", "events", "-n", mine_ns, check=False).stdout)
    infos, _ = installed.inst.read_flow(
        mine_ns, kube.json("flow", "mine", "-n", mine_ns)["metadata"]["uid"])
    outcome = infos["trespass"].result
    assert outcome.pop("user") == f"kflow-ns-{mine_ns}"
    assert all(v.startswith("NoPermissionError") or "NOPERM" in v for v in outcome.values()), \
        outcome
    for secret_ns in (mine_ns, theirs_ns):
        secret = kube.json("secret", "kflow-redis", "-n", secret_ns)
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kflow"

    body = kube.json("flow", "theirs", "-n", theirs_ns)
    deadline = time.monotonic() + 240
    while (body.get("status") or {}).get("phase") not in TERMINAL:
        assert time.monotonic() < deadline, body.get("status")
        time.sleep(1)
        body = kube.json("flow", "theirs", "-n", theirs_ns)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    infos, events = installed.inst.read_flow(theirs_ns, uid)
    assert infos["aggregate"].result["results"] == [0, 1, 4, 9]
    assert infos["item-0"].result == {"index": 0, "result": 0, "success": True}
    completed = collections.Counter(e["node"] for e in events if e["type"] == "completed")
    assert len(completed) == 5 and set(completed.values()) == {1}


def test_a_worker_queue_scales_from_zero_to_its_maximum_and_back(installed: Installed) -> None:
    workers = {"min": 0, "max": 3, "nodesPerWorker": 2, "idleSeconds": 5}
    pool = job_queue("squares", "process_item")
    pool["spec"] = {**pool["spec"], "mode": "Worker", "workers": workers}
    apply(installed, pool, job_queue("sum", "aggregate_results"))
    deployment = "kflow-worker-squares"
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = installed.kube("get", "deployment", deployment, "-n", installed.flows,
                               "-o", "json", check=False)
        if found.returncode == 0:
            break
        time.sleep(1)
    assert json.loads(found.stdout)["spec"]["replicas"] == 0  # an empty pool: no pods

    apply(installed, fan_out("squares-1", 30, item_queue="squares", parent_queue="sum"))
    deadline = time.monotonic() + 240
    phase = None
    while time.monotonic() < deadline and phase not in TERMINAL:
        body = installed.kube.json("deployment", deployment, "-n", installed.flows)
        seen.append(int(body["spec"].get("replicas") or 0))
        phase = flow_status(installed, "squares-1").get("phase")
        time.sleep(0.5)
    assert phase == "Succeeded"
    assert max(seen) == 3, seen  # 30 ready nodes / 2 per worker, capped at max
    infos, _ = read_flow(installed, "squares-1")
    assert infos["aggregate"].result["sum"] == sum(i * i for i in range(30))
    # Idle for idleSeconds: back to zero pods.
    deadline = time.monotonic() + 90
    replicas = -1
    while time.monotonic() < deadline and replicas != 0:
        replicas = int(installed.kube.json("deployment", deployment, "-n",
                                           installed.flows)["spec"].get("replicas") or 0)
        time.sleep(1)
    assert replicas == 0
    pods = installed.kube.json("pods", "-n", installed.flows, "-l", "kflow.dev/queue=squares")
    assert all(not p["spec"].get("hostNetwork") for p in pods["items"])


def active_operator_pod(installed: Installed) -> str:
    """The operator pod kopf's peering made active: the highest priority peer."""
    inst = installed.inst
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        peering = installed.kube.json("kopfpeering", inst.fullname, "-n", installed.flows)
        peers = {key: value for key, value in (peering.get("status") or {}).items()
                 if isinstance(value, dict) and "priority" in value}
        pods = {p["metadata"]["name"] for p in inst.operator_pods()
                if not p["metadata"].get("deletionTimestamp")}
        ranked = sorted(peers.items(), key=lambda kv: -int(kv[1]["priority"]))
        for peer_id, _ in ranked:
            host = peer_id.split("@", 1)[-1].split("/", 1)[0]
            match = [pod for pod in pods if pod in peer_id or pod == host]
            if match:
                return str(match[0])
        time.sleep(1)
    raise AssertionError(f"no active operator among the peers: {peering.get('status')}")


def review_update(installed: Installed, pod: str, path: str, plural: str,
                  body: dict[str, Any]) -> bool:
    """Send `pod`'s admission webhook the review of an update of `body` (unchanged), as the
    API server does; whether it was allowed."""
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "operation": "UPDATE", "object": body, "oldObject": body,
        "kind": {"group": "kflow.dev", "version": "v1alpha1", "kind": body["kind"]},
        "resource": {"group": "kflow.dev", "version": "v1alpha1", "resource": plural},
        "namespace": body["metadata"]["namespace"], "name": body["metadata"]["name"],
        "userInfo": {"username": "kubernetes-admin"}, "dryRun": False}}
    # Loopback to a port-forward: the certificate names the Service, not 127.0.0.1.
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with installed.inst.port_forwarded(f"pod/{pod}", WEBHOOK_PORT) as port:
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/{path}", data=json.dumps(review).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, context=context, timeout=30) as reply:
            return bool(json.load(reply)["response"]["allowed"])


def test_the_standby_operator_finishes_a_flow_when_the_active_pod_is_deleted(
        installed: Installed) -> None:
    inst = installed.inst
    apply(installed, job_queue("slow-items", "process_item", concurrency=2),
          job_queue("slow-sum", "aggregate_results"))
    apply(installed, fan_out("failover-1", 12, item_queue="slow-items", parent_queue="slow-sum"))
    deadline = time.monotonic() + 60
    while flow_status(installed, "failover-1").get("counts", {}).get("completed", 0) < 2:
        assert time.monotonic() < deadline, flow_status(installed, "failover-1")
        time.sleep(0.5)
    active = active_operator_pod(installed)
    standby = next(p["metadata"]["name"] for p in inst.operator_pods()
                   if p["metadata"]["name"] != active)
    # The standby serves the admission webhook too. The API server keeps its connection to
    # the webhook Service, so every update of the Flow may be judged there, and kopf then
    # knows the Flow before the standby's first listing of it: one such review, sent to it.
    body = installed.kube.json("flow", "failover-1", "-n", installed.flows)
    assert review_update(installed, standby, "validate-flow", "flows", body)
    # The standby, not a fresh replica, must take over: the active pod goes by scaling to
    # one, its deletion cost making it the one the ReplicaSet removes.
    installed.kube("-n", inst.namespace, "annotate", "pod", active,
                   "controller.kubernetes.io/pod-deletion-cost=-1000", "--overwrite")
    installed.kube("-n", inst.namespace, "scale", "deployment", inst.fullname, "--replicas=1")
    try:
        status = wait_phase(installed, "failover-1", timeout=300)
        assert active not in {p["metadata"]["name"] for p in inst.operator_pods()}
    finally:
        installed.kube("-n", inst.namespace, "scale", "deployment", inst.fullname,
                       "--replicas=2")
    assert status["phase"] == "Succeeded", status
    infos, events = read_flow(installed, "failover-1")
    assert infos["aggregate"].result["sum"] == sum(i * i for i in range(12))
    completed = collections.Counter(e["node"] for e in events if e["type"] == "completed")
    assert set(completed.values()) == {1} and len(completed) == 13
    until("two operator replicas again", lambda: len(
        [p for p in inst.operator_pods() if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or [])]) == 2, timeout=120)


def test_redis_comes_back_from_its_append_only_file_when_its_pod_is_deleted(
        installed: Installed) -> None:
    apply(installed, job_queue("aof-items", "process_item", concurrency=3),
          job_queue("aof-sum", "aggregate_results"))
    # Attempts to spare: a pod whose final write meets the outage tries again.
    apply(installed, fan_out("aof-1", 20, item_queue="aof-items", parent_queue="aof-sum",
                             defaults={"attempts": 5, "backoff": {"type": "fixed",
                                                                  "delay": "2s"}}))
    deadline = time.monotonic() + 90
    while flow_status(installed, "aof-1").get("counts", {}).get("completed", 0) < 3:
        assert time.monotonic() < deadline, flow_status(installed, "aof-1")
        time.sleep(0.5)
    before = installed.inst.redis_pod()
    installed.kube("-n", installed.inst.namespace, "delete", "pod",
                   before["metadata"]["name"], "--wait=false")
    status = wait_phase(installed, "aof-1", timeout=300)
    after = installed.inst.redis_pod()
    assert after["metadata"]["uid"] != before["metadata"]["uid"]  # a new Redis process
    assert status["phase"] == "Succeeded", status
    infos, events = read_flow(installed, "aof-1")
    assert infos["aggregate"].result["sum"] == sum(i * i for i in range(20))
    completed = collections.Counter(e["node"] for e in events if e["type"] == "completed")
    assert len(completed) == 21 and set(completed.values()) == {1}, completed


def test_helm_upgrade_with_a_changed_value_rolls_the_operator(installed: Installed) -> None:
    inst = installed.inst
    old = {p["metadata"]["name"] for p in inst.operator_pods()}
    inst.upgrade("--set", "replicas=3", "--set", "statusIntervalSeconds=2")
    body = installed.kube.json("deployment", inst.fullname, "-n", inst.namespace)
    assert body["status"].get("readyReplicas") == 3
    env = {e["name"]: e.get("value") for e in
           body["spec"]["template"]["spec"]["containers"][0].get("env") or []}
    assert env["KFLOW_STATUS_INTERVAL_SECONDS"] == "2"
    assert not old & {p["metadata"]["name"] for p in inst.operator_pods()}  # new pods
    apply(installed, fan_out("after-upgrade", 3, item_queue="aof-items", parent_queue="aof-sum"))
    assert wait_phase(installed, "after-upgrade")["phase"] == "Succeeded"


def test_no_node_pod_of_this_module_used_the_host_network_or_a_host_mount(
        installed: Installed) -> None:
    assert len(installed.pods.made()) >= 8 + 3 + 13 + 21  # Job pods of the flows above, worker pods
    assert installed.pods.on_the_host() == []


def test_helm_uninstall_leaves_no_kflow_object_but_the_crds(installed: Installed) -> None:
    inst = installed.inst
    # As the chart's README says: the user's Flows and Queues go first, while the operator
    # still runs to take its finalizer off them.
    for namespace in (installed.flows, installed.other):
        installed.kube("delete", "flows,queues", "--all", "-n", namespace, timeout=180)
    inst.uninstall()
    release = f"app.kubernetes.io/instance={inst.release}"

    def left() -> list[str]:
        namespaced = installed.kube(
            "get", "all,secrets,configmaps,serviceaccounts,roles,rolebindings,"
            "poddisruptionbudgets,persistentvolumeclaims,kopfpeerings", "-A", "-l", release,
            "-o", "name", check=False).stdout.split()
        cluster = installed.kube(
            "get", "clusterroles,clusterrolebindings,validatingwebhookconfigurations,"
            "persistentvolumes,clusterkopfpeerings", "-l", release, "-o", "name",
            check=False).stdout.split()
        return namespaced + cluster

    deadline = time.monotonic() + 90  # pods go after their ReplicaSets, by garbage collection
    while left() and time.monotonic() < deadline:
        time.sleep(2)
    assert left() == []
    crds = installed.kube("get", "crd", "-o", "name").stdout.split()
    assert {"customresourcedefinition.apiextensions.k8s.io/flows.kflow.dev",
            "customresourcedefinition.apiextensions.k8s.io/queues.kflow.dev"} <= set(crds)
