"""Flows run as real Job pods on the local cluster, driven by the operator as a real process."""

from __future__ import annotations

import json

import pytest

from kflow.devkit.checkout import REPO
from kflow.devkit.manifests import flow, queue, runnable_examples
from kflow.devkit.operator import Scenario

pytestmark = [pytest.mark.cluster]


def test_etl_chain_runs_as_pods_and_hands_each_result_to_its_parent(scenario: Scenario) -> None:
    scenario.apply(*runnable_examples(REPO / "examples" / "etl-pipeline.yaml"))

    body = scenario.wait_phase("etl-pipeline")

    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert body["status"]["progress"] == "4/4"
    conditions = {c["type"]: c["status"] for c in body["status"]["conditions"]}
    assert conditions["Complete"] == "True" and conditions["Failed"] == "False"
    nodes = scenario.nodes("etl-pipeline")
    assert {n: i.state for n, i in nodes.items()} == dict.fromkeys(
        ("extract", "transform", "load", "notify"), "completed")
    # Each stage's output was built from its child's: the chain carried data end to end.
    assert nodes["notify"].result is not None and nodes["load"].result is not None
    assert scenario.events("FlowSucceeded"), "a FlowSucceeded Event is posted on the Flow"
    assert scenario.jobs() == [], "finished Jobs are cleaned up once their outcome is recorded"


def test_any_image_node_output_from_termination_log_reaches_its_parent(
        scenario: Scenario) -> None:
    scenario.apply(
        queue("shell", shell='echo \'{"rows": 42, "from": "sh"}\' > /dev/termination-log'),
        queue("collect", "echo"),
        flow("any-image", [{"name": "report", "queue": "collect",
                            "children": [{"name": "count", "queue": "shell"}]}]),
    )

    body = scenario.wait_phase("any-image")

    assert body["status"]["phase"] == "Succeeded", body["status"]
    results = scenario.results("any-image")
    assert results["count"] == {"rows": 42, "from": "sh"}
    assert results["report"]["children"] == {"count": {"rows": 42, "from": "sh"}}


def test_invalid_flow_is_marked_invalid_with_an_event_and_nothing_in_redis(
        scenario: Scenario) -> None:
    scenario.apply(
        queue("q", "echo"),
        flow("cyclic", [{"name": "a", "queue": "q", "children": ["b"]},
                        {"name": "b", "queue": "q", "children": ["a"]}]),
    )

    body = scenario.wait_phase("cyclic", ("Failed",), timeout=60)

    valid = next(c for c in body["status"]["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False"
    assert '"a"' in valid["message"] or "a" in valid["message"].split()
    assert "cycle" in valid["message"].lower()
    scenario.wait_for("an InvalidSpec Warning event",
                      lambda: any(e["type"] == "Warning"
                                  for e in scenario.events("InvalidSpec")), timeout=30)
    assert scenario.redis_keys(body["metadata"]["uid"]) == []
    assert scenario.jobs() == []


def test_invalid_flow_reports_schema_and_graph_problems_together_as_lint_does(
        scenario: Scenario) -> None:
    # Without the webhook, the Valid condition is where a user reads the verdict: an inline
    # child's bad option must not hide an unknown child elsewhere, or the other way round.
    scenario.apply(
        queue("q", "echo"),
        flow("two-problems", [
            {"name": "load", "queue": "q", "children": ["transfrom", {
                "name": "fetch", "queue": "q", "opts": {"backoff": {"type": "linear"}}}]},
            {"name": "transform", "queue": "q"}]),
    )

    body = scenario.wait_phase("two-problems", ("Failed",), timeout=60)

    valid = next(c for c in body["status"]["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False"
    message = valid["message"]
    assert 'node "fetch"' in message and "backoff" in message, message
    assert 'did you mean "transform"' in message, message
    assert scenario.redis_keys(body["metadata"]["uid"]) == []


def test_kubectl_wait_for_condition_complete_returns_when_the_flow_succeeds(
        scenario: Scenario) -> None:
    scenario.apply(queue("q", "add_one"),
                   flow("waitable", [{"name": "top", "queue": "q", "children": [
                       {"name": "leaf", "queue": "q", "data": {"value": 1}}]}]))

    done = scenario.kube("wait", "--for=condition=Complete", "flow/waitable", "-n",
                         scenario.namespace, "--timeout=240s", timeout=260)

    assert "condition met" in done.stdout
    assert scenario.results("waitable") == {"leaf": 2, "top": 3}
    listing = scenario.kube("get", "flows", "-n", scenario.namespace).stdout
    assert "Succeeded" in listing and "2/2" in listing


def test_fan_out_of_50_never_runs_more_pods_than_the_queue_concurrency(
        scenario: Scenario) -> None:
    watch = scenario.watch_jobs()
    items = [{"name": f"item-{i}", "queue": "items", "data": {"n": i}} for i in range(50)]
    scenario.apply(queue("items", "square", concurrency=5), queue("agg", "total"),
                   flow("fan-out", [{"name": "aggregate", "queue": "agg", "children": items}]))

    body = scenario.wait_phase("fan-out", timeout=900)

    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert scenario.results("fan-out")["aggregate"] == {
        "count": 50, "sum": sum(i * i for i in range(50))}
    assert len(watch.created(queue="items")) == 50
    most = watch.max_running("items")
    assert 1 < most <= 5, f"at most 5 item Jobs may run at once, saw {most}"


def test_diamond_child_runs_once_and_both_parents_get_its_value(scenario: Scenario) -> None:
    watch = scenario.watch_jobs()
    scenario.apply(queue("q", "echo"), flow("diamond", [
        {"name": "top", "queue": "q", "children": ["left", "right"]},
        {"name": "left", "queue": "q", "children": ["shared"]},
        {"name": "right", "queue": "q", "children": ["shared"]},
        {"name": "shared", "queue": "q", "data": {"v": 7}},
    ]))

    body = scenario.wait_phase("diamond")

    assert body["status"]["phase"] == "Succeeded", body["status"]
    results = scenario.results("diamond")
    assert len(watch.created(node="shared")) == 1
    assert results["left"]["children"]["shared"]["data"] == {"v": 7}
    assert results["right"]["children"]["shared"] == results["left"]["children"]["shared"]
    assert set(results["top"]["children"]) == {"left", "right"}


def test_order_workflow_example_charges_once_and_both_parents_see_the_payment(
    scenario: Scenario,
) -> None:
    watch = scenario.watch_jobs()
    scenario.apply(*runnable_examples(REPO / "examples" / "order-workflow.yaml"))

    body = scenario.wait_phase("order-a17")

    assert body["status"]["phase"] == "Succeeded", body["status"]
    nodes = scenario.nodes("order-a17")
    assert all(info.state == "completed" for info in nodes.values()), nodes
    # One payment Job, one attempt, and the same payment reaches both of its parents.
    assert len(watch.created(node="process-payment")) == 1
    assert nodes["process-payment"].attempt == 1
    payment_id = nodes["process-payment"].result["paymentId"]
    assert nodes["reserve-inventory"].result["paymentId"] == payment_id
    assert nodes["prepare-shipping"].result["paymentId"] == payment_id
    assert nodes["send-confirmation"].result["confirmed"] is True


def test_ignored_child_failure_lets_the_parent_run_and_see_it(scenario: Scenario) -> None:
    scenario.apply(queue("ok", "echo"), queue("bad", "fail"), flow("ignore", [
        {"name": "parent", "queue": "ok", "children": [
            {"name": "optional", "queue": "bad", "opts": {"onFailure": "ignore"}},
            {"name": "needed", "queue": "ok"}]}]))

    body = scenario.wait_phase("ignore")

    assert body["status"]["phase"] == "Succeeded", body["status"]
    parent = scenario.results("ignore")["parent"]
    assert "optional" in parent["ignored"] and "fails on purpose" in parent["ignored"]["optional"]
    assert set(parent["children"]) == {"needed"}


def test_failed_child_fails_its_parent_and_the_flow_with_events(scenario: Scenario) -> None:
    scenario.apply(queue("ok", "echo"), queue("bad", "fail"), flow("fail-parent", [
        {"name": "parent", "queue": "ok", "children": [{"name": "broken", "queue": "bad"}]}]))

    body = scenario.wait_phase("fail-parent")

    assert body["status"]["phase"] == "Failed"
    conditions = {c["type"]: c["status"] for c in body["status"]["conditions"]}
    assert conditions["Failed"] == "True" and conditions["Complete"] == "False"
    failure = body["status"]["firstFailures"][0]
    assert failure["node"] == "broken" and "fails on purpose" in failure["error"]
    nodes = scenario.nodes("fail-parent")
    assert nodes["parent"].state == "failed" and nodes["parent"].result is None
    scenario.wait_for("NodeFailed and FlowFailed events", lambda: bool(
        scenario.events("NodeFailed")) and bool(scenario.events("FlowFailed")), timeout=30)


def test_retries_with_backoff_then_success(scenario: Scenario) -> None:
    scenario.apply(queue("q", "flaky"), flow("retries", [
        {"name": "flaky", "queue": "q", "data": {"succeed_on": 3},
         "opts": {"attempts": 3, "backoff": {"type": "exponential", "delay": "200ms"}}}]))

    body = scenario.wait_phase("retries")

    assert body["status"]["phase"] == "Succeeded", body["status"]
    info = scenario.nodes("retries")["flaky"]
    assert info.attempt == 3 and info.result == {"succeeded_on": 3}


def test_a_node_over_its_timeout_fails(scenario: Scenario) -> None:
    scenario.apply(queue("q", "sleep"), flow("timeout", [
        {"name": "slow", "queue": "q", "data": {"seconds": 120}, "opts": {"timeout": "3s"}}]))

    body = scenario.wait_phase("timeout")

    assert body["status"]["phase"] == "Failed"
    failure = body["status"]["firstFailures"][0]
    assert failure["node"] == "slow" and "timed out" in failure["error"]


def test_deleting_a_running_pod_retries_the_node_without_spending_an_attempt(
        scenario: Scenario) -> None:
    scenario.apply(queue("q", "sleep"), flow("evict", [
        {"name": "victim", "queue": "q", "data": {"seconds": 8}}]))  # attempts: 1
    ns = scenario.namespace

    def running_pod() -> bool:
        out = scenario.kube("get", "pods", "-n", ns, "-o",
                            "jsonpath={.items[?(@.status.phase=='Running')].metadata.name}",
                            check=False).stdout.split()
        if out:
            scenario.kube("delete", "pod", out[0], "-n", ns, "--wait=false")
            return True
        return False

    scenario.wait_for("a running pod to delete", running_pod, timeout=180)
    body = scenario.wait_phase("evict")

    assert body["status"]["phase"] == "Succeeded", body["status"]
    info = scenario.nodes("evict")["victim"]
    assert info.attempt == 1 and info.result == {"slept": True, "attempt": 1}


def test_deleting_the_flow_removes_its_redis_keys_and_jobs(scenario: Scenario) -> None:
    scenario.apply(queue("q", "sleep"), flow("doomed", [
        {"name": f"n{i}", "queue": "q", "data": {"seconds": 60}} for i in range(2)]))
    scenario.wait_for("Jobs to exist", lambda: len(scenario.jobs()) == 2, timeout=120)
    uid = scenario.uid("doomed")
    assert scenario.redis_keys(uid)

    scenario.kube("delete", "flow", "doomed", "-n", scenario.namespace, "--timeout=60s",
                  timeout=90)

    assert scenario.redis_keys(uid) == []
    scenario.wait_for("the flow's Jobs to be gone", lambda: scenario.jobs() == [], timeout=60)


def test_queue_missing_is_reported_and_the_flow_runs_once_the_queue_exists(
        scenario: Scenario) -> None:
    scenario.apply(flow("waits", [{"name": "pay", "queue": "payment"}]))

    def queue_missing() -> bool:
        status = scenario.get_flow("waits").get("status") or {}
        return any(c["type"] == "QueueMissing" and c["status"] == "True"
                   and "payment" in c["message"] for c in status.get("conditions") or [])

    scenario.wait_for("QueueMissing: payment", queue_missing, timeout=60)
    assert scenario.jobs() == []
    scenario.apply(queue("payment", "echo"))

    body = scenario.wait_phase("waits")

    assert body["status"]["phase"] == "Succeeded"
    assert not any(c["type"] == "QueueMissing" and c["status"] == "True"
                   for c in body["status"]["conditions"])


def test_retry_annotation_reruns_failed_nodes_until_the_flow_succeeds(
        scenario: Scenario) -> None:
    scenario.apply(queue("q", "gated"), flow("retry-me", [
        {"name": "gated", "queue": "q"}]))  # one attempt only
    assert scenario.wait_phase("retry-me")["status"]["phase"] == "Failed"
    scenario.open_gate(scenario.uid("retry-me"))

    scenario.kube("annotate", "flow", "retry-me", "-n", scenario.namespace,
                  "kflow.dev/retry=first", "--overwrite")

    body = scenario.wait_phase("retry-me", ("Succeeded",), timeout=240)
    assert body["status"]["phase"] == "Succeeded"
    assert scenario.nodes("retry-me")["gated"].result["passed_on"] >= 1


def test_cancel_stops_running_jobs_and_marks_the_flow_cancelled(scenario: Scenario) -> None:
    scenario.apply(queue("q", "sleep"), flow("stop-me", [
        {"name": "top", "queue": "q", "children": [
            {"name": "long", "queue": "q", "data": {"seconds": 120}}]}]))
    scenario.wait_for("the Job to run", lambda: len(scenario.jobs()) == 1, timeout=120)

    scenario.kube("patch", "flow", "stop-me", "-n", scenario.namespace, "--type=merge",
                  "-p", '{"spec": {"cancel": true}}')

    body = scenario.wait_phase("stop-me", ("Cancelled",), timeout=120)
    assert body["status"]["phase"] == "Cancelled"
    scenario.wait_for("the running Job to be deleted", lambda: scenario.jobs() == [],
                      timeout=60)
    assert scenario.nodes("stop-me")["top"].state != "completed"


def test_suspended_flow_dispatches_nothing_until_resumed(scenario: Scenario) -> None:
    scenario.apply(queue("q", "echo"), flow("paused", [{"name": "a", "queue": "q"}],
                                             suspend=True))
    body = scenario.wait_phase("paused", ("Suspended",), timeout=60)
    assert body["status"]["phase"] == "Suspended"
    assert scenario.jobs() == []

    scenario.kube("patch", "flow", "paused", "-n", scenario.namespace, "--type=merge",
                  "-p", '{"spec": {"suspend": false}}')

    assert scenario.wait_phase("paused")["status"]["phase"] == "Succeeded"


def test_ttl_after_finished_deletes_the_flow_and_its_keys(scenario: Scenario) -> None:
    scenario.apply(queue("q", "echo"), flow("short-lived", [{"name": "a", "queue": "q"}],
                                             ttlSecondsAfterFinished=2))
    body = scenario.wait_phase("short-lived")
    uid = body["metadata"]["uid"]
    assert body["status"]["phase"] == "Succeeded"

    scenario.wait_for("the Flow to be deleted after its TTL", lambda: scenario.kube(
        "get", "flow", "short-lived", "-n", scenario.namespace, check=False).returncode != 0,
        timeout=120)
    assert scenario.redis_keys(uid) == []


def test_unknown_child_is_reported_naming_the_node_and_field(scenario: Scenario) -> None:
    scenario.apply(queue("q", "echo"), flow("typo", [
        {"name": "load", "queue": "q", "children": ["transfrom"]},
        {"name": "transform", "queue": "q"}]))

    body = scenario.wait_phase("typo", ("Failed",), timeout=60)

    valid = next(c for c in body["status"]["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False"
    assert "load" in valid["message"] and "transfrom" in valid["message"]
    assert "children" in valid["message"]
    assert scenario.redis_keys(body["metadata"]["uid"]) == []


def test_bad_field_types_are_rejected_by_kubectl_apply(scenario: Scenario) -> None:
    bad = flow("bad-types", [{"name": "a", "queue": "q", "opts": {"attempts": "three"}}])

    applied = scenario.kube("apply", "-n", scenario.namespace, "-f", "-",
                            input=json.dumps(bad), check=False)

    assert applied.returncode != 0
    assert "attempts" in applied.stderr
    assert scenario.kube("get", "flow", "bad-types", "-n", scenario.namespace,
                         check=False).returncode != 0


def test_a_pod_that_cannot_start_is_reported_and_fails_its_attempt(scenario: Scenario) -> None:
    broken = queue("q", "echo")
    broken["spec"]["template"]["spec"]["containers"][0]["image"] = "localhost/no-such-image:1"
    scenario.apply(broken, flow("no-image", [{"name": "a", "queue": "q"}]))

    body = scenario.wait_phase("no-image", timeout=180)

    assert body["status"]["phase"] == "Failed"
    assert "ErrImageNeverPull" in body["status"]["firstFailures"][0]["error"]
    assert any("no-such-image" in e["message"] or "ErrImageNeverPull" in e["message"]
               for e in scenario.events("NodeStuck"))
    scenario.wait_for("the stuck Job to be deleted", lambda: scenario.jobs() == [], timeout=60)


def test_queue_changes_take_effect_without_a_restart(scenario: Scenario) -> None:
    scenario.apply(queue("q", shell='echo \'{"v": 1}\' > /dev/termination-log'),
                   flow("before", [{"name": "a", "queue": "q"}]))
    assert scenario.wait_phase("before")["status"]["phase"] == "Succeeded"

    scenario.apply(queue("q", shell='echo \'{"v": 2}\' > /dev/termination-log'))
    scenario.apply(flow("after", [{"name": "a", "queue": "q"}]))

    assert scenario.wait_phase("after")["status"]["phase"] == "Succeeded"
    assert scenario.results("before") == {"a": {"v": 1}}
    assert scenario.results("after") == {"a": {"v": 2}}
    assert scenario.operator.starts == 1
