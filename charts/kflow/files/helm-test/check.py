"""`helm test`: run a two-node Flow through the installed operator and wait for it to succeed.

Runs in the operator image (it has the kubernetes client) under a ServiceAccount that may only
create, read and delete Flows and Queues and list pods in the test namespace. Settings come
from the environment the test Pod sets; exit 0 when the Flow succeeded.
"""

import os
import sys
import time
import uuid

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP, VERSION = "kflow.dev", "v1alpha1"
NAMESPACE = os.environ["KFLOW_TEST_NAMESPACE"]
NAME = os.environ["KFLOW_TEST_NAME"]
RUNNER_IMAGE = os.environ["KFLOW_TEST_RUNNER_IMAGE"]
HANDLERS_CONFIGMAP = os.environ["KFLOW_TEST_HANDLERS_CONFIGMAP"]
TIMEOUT = float(os.environ.get("KFLOW_TEST_TIMEOUT_SECONDS", "180"))
RESTRICTED = {
    "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def queue() -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Queue",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/component": "helm-test"}},
        "spec": {"mode": "Job", "concurrency": 2, "template": {"spec": {
            "containers": [{
                "name": "main", "image": RUNNER_IMAGE,
                "command": ["kflow-run", "/etc/kflow-test/handler.py:run"],
                "securityContext": RESTRICTED,
                "volumeMounts": [{"name": "handler", "mountPath": "/etc/kflow-test",
                                  "readOnly": True}],
            }],
            "securityContext": {"runAsNonRoot": True,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "handler", "configMap": {"name": HANDLERS_CONFIGMAP}}],
        }}},
    }


def flow(word: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Flow",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/component": "helm-test"}},
        "spec": {"nodes": [{
            "name": "check", "queue": NAME, "data": {"word": word},
            "children": [{"name": "echo", "queue": NAME, "data": {"word": word}}],
        }]},
    }


def delete(api: client.CustomObjectsApi, plural: str, wait: bool) -> None:
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, NAME)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return
    deadline = time.monotonic() + 60
    while wait and time.monotonic() < deadline:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, NAME)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(1)


def explain_pods(core: client.CoreV1Api, uid: str) -> None:
    """Why the Flow's pods are stuck, e.g. the Redis Secret missing from the namespace."""
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"kflow.dev/flow-uid={uid}")
    if not pods.items:
        say("no Job pod was made: is the operator running and serving this namespace?")
    for pod in pods.items:
        for status in pod.status.container_statuses or []:
            state = status.state
            detail = (state.waiting and f"waiting: {state.waiting.reason}: "
                      f"{state.waiting.message or ''}") or \
                     (state.terminated and f"terminated: {state.terminated.reason}: "
                      f"{state.terminated.message or ''}") or "running"
            say(f"pod {pod.metadata.name}: {detail}")
        if not pod.status.container_statuses:
            say(f"pod {pod.metadata.name}: {pod.status.phase}")


def main() -> int:
    config.load_incluster_config()
    api, core = client.CustomObjectsApi(), client.CoreV1Api()
    word = uuid.uuid4().hex[:12]
    delete(api, "flows", wait=True)
    delete(api, "queues", wait=True)
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "queues", queue())
    created = api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "flows", flow(word))
    uid = created["metadata"]["uid"]
    say(f"Flow {NAMESPACE}/{NAME} created: echo({word!r}) then check, on queue {NAME}")
    deadline, seen, status = time.monotonic() + TIMEOUT, None, {}
    try:
        while time.monotonic() < deadline:
            status = api.get_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "flows", NAME).get("status") or {}
            phase = status.get("phase")
            if phase != seen:
                say(f"phase {phase} ({status.get('progress', '0/2')})")
                seen = phase
            if phase == "Succeeded":
                say("the operator ran both nodes and the child's result reached its parent")
                return 0
            if phase in ("Failed", "Cancelled"):
                break
            time.sleep(2)
        else:
            say(f"the Flow did not succeed within {TIMEOUT:.0f}s")
        for condition in status.get("conditions") or []:
            say(f"condition {condition.get('type')}={condition.get('status')}: "
                f"{condition.get('message', '')}")
        for failure in status.get("firstFailures") or []:
            say(f"node {failure.get('node')} failed: {failure.get('error')}")
        explain_pods(core, uid)
        return 1
    finally:
        delete(api, "flows", wait=True)
        delete(api, "queues", wait=False)


if __name__ == "__main__":
    sys.exit(main())
