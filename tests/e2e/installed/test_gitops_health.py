"""What Flux (kstatus) and Argo CD (gitops/argocd/health) say of kflow objects from a live run:
kflow installed by its chart makes Flows run, succeed, fail and wait suspended, judges valid and
invalid Queues, FlowTemplates and Flows, and schedules CronFlows; the objects read back with
kubectl go through hack/gitops-health (cli-utils' kstatus, and our health.lua in gopher-lua as
Argo CD runs it). The release has no admission webhook, so the invalid objects are stored as
they are on a cluster whose webhook is off or was unreachable (failurePolicy Ignore).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kflow.api.states import TERMINAL_PHASES
from kflow.devkit.checkout import REPO
from kflow.devkit.gitops import GitOpsHealth, gitops_health
from kflow.devkit.operator import Kube
from tests.e2e.installed.conftest import EXAMPLES_IMAGE, Installed, gate_queue, release, until
from tests.e2e.installed.test_installed_chart import job_queue

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

API = "kflow.dev/v1alpha1"
KINDS = "flows,queues,flowtemplates,cronflows"


def sleep_queue(name: str) -> dict[str, Any]:
    """A Job Queue whose nodes run for an hour: a Flow on it stays Running."""
    return {"apiVersion": API, "kind": "Queue", "metadata": {"name": name},
            "spec": {"mode": "Job", "template": {"spec": {"containers": [
                {"name": "main", "image": EXAMPLES_IMAGE,
                 "command": ["/bin/sh", "-c", "sleep 3600"]}]}}}}


def flow(name: str, queue: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Flow", "metadata": {"name": name},
            "spec": {"defaults": {"attempts": 1}, **spec,
                     "nodes": [{"name": "work", "queue": queue, "data": {}}]}}


CYCLE = [{"name": "a", "queue": "gh-ok", "children": ["b"]},
         {"name": "b", "queue": "gh-ok", "children": ["a"]}]


def template(name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "FlowTemplate", "metadata": {"name": name},
            "spec": {"parameters": [{"name": "order", "type": "string"}],
                     "defaults": {"attempts": 1}, "nodes": nodes}}


def cronflow(name: str, schedule: str, queue: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "CronFlow", "metadata": {"name": name},
            "spec": {"schedule": schedule, "failedFlowsHistoryLimit": 1, **spec,
                     "flow": {"spec": {"defaults": {"attempts": 1},
                                       "nodes": [{"name": "work", "queue": queue,
                                                  "data": {}}]}}}}


def next_minute_daily() -> str:
    """A daily schedule whose one run today is in the coming minute (two, near its end)."""
    at = datetime.now(UTC) + timedelta(minutes=1 if datetime.now(UTC).second < 45 else 2)
    return f"{at.minute} {at.hour} * * *"


# What each object must look like to kstatus and to Argo CD: (kind, name) ->
# (kstatus status, Argo CD status, a piece of the Argo CD message).
EXPECTED = {
    ("Queue", "gh-ok"): ("Current", "Healthy", "waiting"),
    ("Queue", "gh-invalid"): ("Failed", "Degraded", "hostNetwork"),
    ("Flow", "gh-succeeded"): ("Current", "Healthy", "Succeeded, 1/1 nodes done"),
    ("Flow", "gh-failed"): ("Failed", "Degraded", 'node "work" failed'),
    ("Flow", "gh-running"): ("InProgress", "Progressing", "Running"),
    # A suspended Flow is unfinished: kstatus reads Ready=False as InProgress.
    ("Flow", "gh-suspended"): ("InProgress", "Suspended", "kubectl kflow resume"),
    ("Flow", "gh-invalid"): ("Failed", "Degraded", "cycle"),
    ("Flow", "gh-from-template"): ("Current", "Healthy", "Succeeded"),
    ("Flow", "gh-no-template"): ("Failed", "Degraded", "gh-missing"),
    ("FlowTemplate", "gh-template"): ("Current", "Healthy", ""),
    ("FlowTemplate", "gh-bad-template"): ("Failed", "Degraded", "cycle"),
    ("CronFlow", "gh-cron"): ("Current", "Healthy", "next run at"),
    ("CronFlow", "gh-cron-suspended"): ("Current", "Suspended", "no new runs"),
    ("CronFlow", "gh-cron-failing"): ("Current", "Degraded", "failed"),
    ("CronFlow", "gh-cron-bad-zone"): ("Failed", "Degraded", "Mars/Olympus_Mons"),
    # docs/gitops.md's worked repository, applied as Argo CD or Flux would.
    **{("Queue", f"pipeline-{stage}"): ("Current", "Healthy", "waiting")
       for stage in ("extract", "transform", "load", "notify")},
    ("FlowTemplate", "etl"): ("Current", "Healthy", ""),
    ("CronFlow", "etl-nightly"): ("Current", "Healthy", "next run at"),
    ("Flow", "etl-backfill-2026-11"): ("Current", "Healthy", "Succeeded, 4/4 nodes done"),
}


def read(installed: Installed) -> dict[tuple[str, str], dict[str, Any]]:
    listing = installed.kube.json(KINDS, "-n", installed.flows)
    return {(o["kind"], o["metadata"]["name"]): o for o in listing["items"]}


def phase(objects: dict[tuple[str, str], dict[str, Any]], name: str) -> str | None:
    got: str | None = objects.get(("Flow", name), {}).get("status", {}).get("phase")
    return got


def handled(obj: dict[str, Any]) -> bool:
    """The operator wrote a status with its conditions, about this generation (every kind
    says which)."""
    status = obj.get("status") or {}
    return bool(status.get("conditions")) and \
        status.get("observedGeneration") == obj["metadata"]["generation"]


def settled(objects: dict[tuple[str, str], dict[str, Any]]) -> bool:
    """Every object is in the state EXPECTED is about (each Flow in its phase)."""
    phases = {"gh-succeeded": {"Succeeded"}, "gh-failed": {"Failed"}, "gh-running": {"Running"},
              "gh-suspended": {"Suspended"}, "gh-invalid": {"Failed"},
              "gh-from-template": {"Succeeded"}, "gh-no-template": TERMINAL_PHASES | {"Pending"},
              "etl-backfill-2026-11": {"Succeeded"}}
    failing = objects.get(("CronFlow", "gh-cron-failing"), {}).get("status", {})
    return (all(key in objects and handled(objects[key]) for key in EXPECTED)
            and all(phase(objects, name) in want for name, want in phases.items())
            and (failing.get("lastFlow") or {}).get("phase") == "Failed")


@pytest.fixture(scope="module")
def installed(kube: Kube) -> Iterator[Installed]:
    """The set's release, without the admission webhook (the invalid objects get in)."""
    yield from release(kube, "--set", "webhook.enabled=false")


@pytest.fixture(scope="module")
def seen(installed: Installed) -> Iterator[tuple[dict[tuple[str, str], GitOpsHealth],
                                                  dict[tuple[str, str], dict[str, Any]]]]:
    """The objects run to their states, read with kubectl, and judged by both tools."""
    kube, ns = installed.kube, installed.flows
    # A user upgrading kflow applies the new CRDs (helm installs crds/ only when missing).
    kube("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    bad_queue = job_queue("gh-invalid", "critical_task")
    bad_queue["spec"]["template"]["spec"]["hostNetwork"] = True
    kube.apply([
        job_queue("gh-ok", "critical_task"), gate_queue("gh-gate"), sleep_queue("gh-sleep"),
        bad_queue,
        template("gh-template", [{"name": "work", "queue": "gh-ok",
                                  "data": {"order": "{{ params.order }}"}}]),
        template("gh-bad-template", CYCLE),
        # The one run of gh-cron-failing starts within two minutes; the rest runs meanwhile.
        cronflow("gh-cron-failing", next_minute_daily(), "gh-gate"),
        cronflow("gh-cron", "* * * * *", "gh-ok"),
        cronflow("gh-cron-suspended", "* * * * *", "gh-ok", suspend=True),
        cronflow("gh-cron-bad-zone", "* * * * *", "gh-ok", timeZone="Mars/Olympus_Mons"),
    ], ns)
    kube.apply([
        flow("gh-succeeded", "gh-ok"), flow("gh-failed", "gh-gate"),
        flow("gh-running", "gh-sleep"), flow("gh-suspended", "gh-sleep", suspend=True),
        {"apiVersion": API, "kind": "Flow", "metadata": {"name": "gh-invalid"},
         "spec": {"nodes": CYCLE}},
        {"apiVersion": API, "kind": "Flow", "metadata": {"name": "gh-from-template"},
         "spec": {"templateRef": {"name": "gh-template", "parameters": {"order": "A-17"}}}},
        {"apiVersion": API, "kind": "Flow", "metadata": {"name": "gh-no-template"},
         "spec": {"templateRef": {"name": "gh-missing", "parameters": {"order": "A-17"}}}},
    ], ns)
    kube("apply", "-k", str(REPO / "examples" / "gitops" / "pipelines"), "-n", ns)
    objects: dict[tuple[str, str], dict[str, Any]] = {}

    def ready() -> bool:
        nonlocal objects
        objects = read(installed)
        return settled(objects)

    try:
        until("every object in its state", ready, timeout=420, every=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{summary(objects)}") from None
    found = gitops_health(list(objects.values()))
    yield {(s.kind, s.name): s for s in found}, objects
    kube("delete", "flowtemplates", "--all", "-n", ns, check=False, timeout=180)


def summary(objects: dict[tuple[str, str], dict[str, Any]]) -> str:
    lines = []
    for (kind, name), obj in sorted(objects.items()):
        status = obj.get("status") or {}
        conditions = [(c["type"], c["status"], c.get("reason"))
                      for c in status.get("conditions", [])]
        lines.append(f"{kind}/{name}: phase={status.get('phase')} observed="
                     f"{status.get('observedGeneration')}/{obj['metadata']['generation']} "
                     f"lastFlow={status.get('lastFlow')} conditions={conditions}")
    return "\n".join(lines)


@pytest.mark.parametrize("key", list(EXPECTED), ids=[f"{k}-{n}" for k, n in EXPECTED])
def test_kstatus_and_argo_cd_health(
        seen: tuple[dict[tuple[str, str], GitOpsHealth], dict[tuple[str, str], dict[str, Any]]],
        key: tuple[str, str]) -> None:
    health, objects = seen
    kstatus, argocd, message = EXPECTED[key]
    got = health[key]
    status = objects[key].get("status")
    assert got.kstatus.status == kstatus, (got, status)
    assert got.argocd is not None and got.argocd.status == argocd, (got, status)
    assert message in got.argocd.message, (got, status)


def test_a_cronflow_run_is_a_flow_the_tools_judge_too(
        seen: tuple[dict[tuple[str, str], GitOpsHealth], dict[tuple[str, str], dict[str, Any]]],
        installed: Installed) -> None:
    """The failed run of gh-cron-failing, as Argo CD shows it under its CronFlow."""
    _, objects = seen
    run = objects["CronFlow", "gh-cron-failing"]["status"]["lastFlow"]["name"]
    flow_obj = installed.kube.json("flow", run, "-n", installed.flows)
    assert flow_obj["metadata"]["labels"]["kflow.dev/cronflow"] == "gh-cron-failing"
    [got] = gitops_health([flow_obj])
    assert (got.kstatus.status, got.argocd and got.argocd.status) == ("Failed", "Degraded"), got
