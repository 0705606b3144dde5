"""Flows kept in git, on the local cluster with kflow installed by its chart: a FlowTemplate's
parameters reach the nodes, a template change never reaches a Flow that already started, a
Flow applied before its template waits for it; a changed fixed-name Flow does what its
changePolicy says (Reject refuses, Restart cancels and runs the new spec, Queue lets the run
finish first), and re-applying an unchanged file changes nothing."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kflow.devkit.checkout import REPO
from kflow.devkit.operator import Kube
from tests.e2e.installed.conftest import EXAMPLES_IMAGE, Installed, release, until
from tests.e2e.installed.test_installed_chart import read_flow, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

API = "kflow.dev/v1alpha1"
RECORDS = [{"id": 1, "customer": "ada", "amount": "1.50"}]


@pytest.fixture(scope="module")
def installed(kube: Kube) -> Iterator[Installed]:
    # Helm installs a chart's crds/ only where missing: bring these up to date first.
    for crd in ("flows", "flowtemplates"):
        kube("apply", "--server-side", "--force-conflicts", "-f",
             str(REPO / "crds" / f"{crd}.kflow.dev.yaml"))
    yield from release(kube)


def queue(name: str, sleep: int = 0) -> dict[str, Any]:
    """A Job Queue running examples.handlers:extract, after `sleep` seconds."""
    run = "exec kflow-run examples.handlers:extract"
    return {"apiVersion": API, "kind": "Queue", "metadata": {"name": name},
            "spec": {"mode": "Job", "template": {"spec": {"containers": [
                {"name": "main", "image": EXAMPLES_IMAGE,
                 "command": ["/bin/sh", "-c", f"sleep {sleep}; {run}" if sleep else run]}]}}}}


def node(name: str, queue_name: str, pipeline: str = "p") -> dict[str, Any]:
    return {"name": name, "queue": queue_name,
            "data": {"input": {"records": RECORDS}, "pipelineId": pipeline}}


def flow(name: str, *nodes: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Flow", "metadata": {"name": name},
            "spec": {"defaults": {"attempts": 1}, "nodes": list(nodes), **spec}}


def template(name: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "FlowTemplate", "metadata": {"name": name},
            "spec": {"parameters": [
                {"name": "day", "description": "the day to load"},
                {"name": "records", "type": "array", "default": []}],
                "defaults": {"attempts": 1}, "nodes": list(nodes)}}


def templated_node(name: str, queue_name: str) -> dict[str, Any]:
    return {"name": name, "queue": queue_name,
            "data": {"input": {"records": "{{ params.records }}"},
                     "pipelineId": "load-{{ params.day }}"}}


def templated_flow(name: str, template_name: str, **parameters: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Flow", "metadata": {"name": name},
            "spec": {"templateRef": {"name": template_name, "parameters": parameters}}}


def apply(installed: Installed, *docs: dict[str, Any],
          check: bool = True) -> subprocess.CompletedProcess[str]:
    return installed.kube("-n", installed.flows, "apply", "-f", "-",
                          input="\n---\n".join(json.dumps(doc) for doc in docs), check=check)


def get(installed: Installed, kind: str, name: str) -> dict[str, Any]:
    return installed.kube.json(kind, name, "-n", installed.flows)  # type: ignore[no-any-return]


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == ctype), {})


def running(installed: Installed, name: str) -> bool:
    """The flow runs and a Job of it exists (its pod may still be sleeping before it takes
    the node, so the node may not count as active yet)."""
    body = get(installed, "flow", name)
    if (body.get("status") or {}).get("phase") != "Running":
        return False
    jobs = installed.kube.json("jobs", "-n", installed.flows, "-l",
                               f"kflow.dev/flow-uid={body['metadata']['uid']}")["items"]
    return bool(jobs)


@pytest.fixture(scope="module")
def queues(installed: Installed) -> None:
    apply(installed, queue("gx-quick"), queue("gx-slow", sleep=25), queue("gx-hold", sleep=900))


def test_a_templated_flow_runs_its_parameters_and_keeps_its_template_generation(
        installed: Installed, queues: None) -> None:
    apply(installed, template("etl", templated_node("extract", "gx-slow")))
    until("the template's Valid condition",
          lambda: condition(get(installed, "flowtemplate", "etl"), "Valid").get("status")
          == "True", timeout=60)
    apply(installed, templated_flow("etl-monday", "etl", day="monday", records=RECORDS * 3))
    until("the run to start", lambda: running(installed, "etl-monday"), timeout=120)
    pinned = get(installed, "flow", "etl-monday")["status"]["template"]
    assert (pinned["name"], pinned["generation"]) == ("etl", 1)

    # The template changes while the flow runs: one node more, another pipeline name.
    apply(installed, template("etl", templated_node("extract", "gx-quick"),
                              node("extra", "gx-quick")))
    status = wait_phase(installed, "etl-monday", timeout=240)
    assert status["phase"] == "Succeeded", status
    assert status["total"] == 1 and status["template"]["generation"] == 1
    infos, _ = read_flow(installed, "etl-monday")
    assert set(infos) == {"extract"}
    assert infos["extract"].result == {"records": RECORDS * 3, "count": 3}
    # Ready for GitOps tools; the new template generation is Valid too.
    assert condition(get(installed, "flow", "etl-monday"), "Ready")["status"] == "True"
    etl = get(installed, "flowtemplate", "etl")
    assert etl["status"]["observedGeneration"] == 2

    # A Flow made now gets the new template.
    apply(installed, templated_flow("etl-tuesday", "etl", day="tuesday"))
    status = wait_phase(installed, "etl-tuesday", timeout=240)
    assert status["phase"] == "Succeeded" and status["total"] == 2, status
    assert status["template"]["generation"] == 2


def test_a_bad_parameter_is_refused_at_apply_time_naming_the_field_and_the_fix(
        installed: Installed, queues: None) -> None:
    refused = apply(installed, templated_flow("etl-bad", "etl", day=3), check=False)
    assert refused.returncode != 0
    assert "spec.templateRef.parameters.day is 3, not a string" in refused.stderr, \
        refused.stderr
    refused = apply(installed, templated_flow("etl-bad", "etl"), check=False)
    assert 'parameter "day" of FlowTemplate' in refused.stderr and "is required" in \
        refused.stderr, refused.stderr


def test_a_flow_applied_before_its_template_waits_for_it(
        installed: Installed, queues: None) -> None:
    apply(installed, templated_flow("late-run", "late", day="friday"))
    until("TemplateNotFound", lambda: condition(get(installed, "flow", "late-run"),
                                                 "Stalled").get("reason") == "TemplateNotFound",
          timeout=60)
    stalled = condition(get(installed, "flow", "late-run"), "Stalled")
    assert f"FlowTemplate {installed.flows}/late does not exist" in stalled["message"]
    apply(installed, template("late", templated_node("extract", "gx-quick")))
    status = wait_phase(installed, "late-run", timeout=240)
    assert status["phase"] == "Succeeded", status


def test_reject_refuses_a_change_and_an_unchanged_reapply_changes_nothing(
        installed: Installed, queues: None) -> None:
    original = flow("fixed", node("a", "gx-quick"))
    apply(installed, original)
    assert wait_phase(installed, "fixed")["phase"] == "Succeeded"
    refused = apply(installed, flow("fixed", node("b", "gx-quick")), check=False)
    assert refused.returncode != 0
    assert "spec.nodes is immutable" in refused.stderr and "changePolicy" in refused.stderr

    before = get(installed, "flow", "fixed")
    again = apply(installed, original)
    assert "unchanged" in again.stdout
    time.sleep(5)  # what a status patch or a new run would have needed
    after = get(installed, "flow", "fixed")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"].get("runs", []) == []


def test_restart_cancels_the_running_run_and_runs_the_new_spec(
        installed: Installed, queues: None) -> None:
    apply(installed, flow("restarted", node("hold", "gx-hold"), changePolicy="Restart"))
    until("the first run to start", lambda: running(installed, "restarted"), timeout=120)
    apply(installed, flow("restarted", node("quick", "gx-quick"), changePolicy="Restart"))
    until("the second run", lambda: get(installed, "flow", "restarted")["status"].get(
        "runGeneration") == 2, timeout=60)
    status = wait_phase(installed, "restarted")
    assert status["phase"] == "Succeeded" and status["total"] == 1, status
    assert [(r["generation"], r["phase"], r["reason"]) for r in status["runs"]] == [
        (1, "Cancelled", "Restarted")]
    assert status["observedGeneration"] == 2
    infos, _ = read_flow(installed, "restarted")
    assert set(infos) == {"quick"}
    # The first run's Job went with it.
    jobs = installed.kube.json("jobs", "-n", installed.flows, "-l",
                               "kflow.dev/flow-uid=" + get(installed, "flow", "restarted")[
                                   "metadata"]["uid"])["items"]
    assert not [j for j in jobs if "hold" in j["metadata"]["name"]], jobs


def test_queue_lets_the_running_run_finish_then_runs_the_new_spec(
        installed: Installed, queues: None) -> None:
    apply(installed, flow("queued", node("slow", "gx-slow"), changePolicy="Queue"))
    until("the first run to start", lambda: running(installed, "queued"), timeout=120)
    apply(installed, flow("queued", node("quick", "gx-quick"), node("quick2", "gx-quick"),
                          changePolicy="Queue"))
    until("the change to be queued", lambda: condition(
        get(installed, "flow", "queued"), "Reconciling").get("reason") == "ChangeQueued",
        timeout=60)
    waiting = get(installed, "flow", "queued")["status"]
    assert waiting["phase"] == "Running" and waiting["runGeneration"] == 1, waiting
    until("the second run", lambda: get(installed, "flow", "queued")["status"].get(
        "runGeneration") == 2, timeout=180)
    status = wait_phase(installed, "queued")
    assert status["phase"] == "Succeeded" and status["total"] == 2, status
    first = status["runs"][0]
    assert (first["generation"], first["phase"], first["reason"], first["completed"]) == (
        1, "Succeeded", "Finished", 1)
    infos, _ = read_flow(installed, "queued")
    assert set(infos) == {"quick", "quick2"}
