"""The Job executor's pure parts: Job manifests from attempts, outcomes from Jobs and pods."""

from __future__ import annotations

import json
import re

import pytest

from kflow.engine import Attempt, FlowSnapshot, NodeFailure
from kflow.kube.jobs import (
    RedisEnv,
    build_job,
    classify_failure,
    job_identity,
    job_name,
    job_state,
    label_value,
    termination_output,
)
from kflow.kube.status import FlowView, build_status

UID = "0b8c4c55-6a2e-4df0-9c1d-2f1f6d3f0a11"


def attempt(**over: object) -> Attempt:
    fields: dict[str, object] = dict(
        flow_uid=UID, namespace="etl", flow_name="orders-7", node="load", queue="warehouse",
        attempt=2, token="tok-123", data={"day": "2026-11-28"}, timeout_ms=90_500)
    fields.update(over)
    return Attempt(**fields)  # type: ignore[arg-type]


TEMPLATE = {"metadata": {"labels": {"team": "data"}}, "spec": {
    "restartPolicy": "OnFailure",
    "containers": [
        {"name": "sidecar", "image": "proxy"},
        {"name": "main", "image": "etl:1", "env": [{"name": "KFLOW_TOKEN", "value": "forged"},
                                                   {"name": "MODE", "value": "fast"}],
         "resources": {"requests": {"cpu": "100m"}}},
    ]}}


def test_job_is_built_from_the_queue_template_with_kflow_bookkeeping() -> None:
    job = build_job(attempt(), flow_uid=UID, template=TEMPLATE, redis=RedisEnv())

    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 91  # 90.5 s rounds up, never down
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Flow", UID, True)
    labels = job["metadata"]["labels"]
    assert labels["kflow.dev/flow"] == "orders-7" and labels["kflow.dev/node"] == "load"
    assert labels["kflow.dev/queue"] == "warehouse" and labels["kflow.dev/attempt"] == "2"
    pod = spec["template"]
    assert pod["metadata"]["labels"]["team"] == "data"
    assert pod["metadata"]["labels"]["kflow.dev/flow-uid"] == UID
    assert pod["spec"]["restartPolicy"] == "Never"
    main = pod["spec"]["containers"][1]
    env = {e["name"]: e for e in main["env"]}
    assert env["KFLOW_TOKEN"]["value"] == "tok-123", "the template cannot forge the token"
    assert env["MODE"]["value"] == "fast"
    assert env["KFLOW_ATTEMPT"]["value"] == "2" and env["KFLOW_NODE"]["value"] == "load"
    assert json.loads(env["KFLOW_DATA"]["value"]) == {"day": "2026-11-28"}
    assert main["resources"] == {"requests": {"cpu": "100m"}}
    assert "env" not in pod["spec"]["containers"][0]


def test_redis_settings_reach_the_pod_only_through_a_secret() -> None:
    job = build_job(attempt(), flow_uid=UID, template=TEMPLATE,
                    redis=RedisEnv(secret_name="redis-creds"))

    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][1]["env"]}
    url = env["KFLOW_REDIS_URL"]
    assert "value" not in url
    assert url["valueFrom"]["secretKeyRef"] == {"name": "redis-creds", "key": "url"}
    assert env["KFLOW_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "redis://" not in json.dumps(job)


def test_pods_get_the_operators_tls_and_a_private_ca_as_a_file_from_the_secret() -> None:
    from kflow.settings import PodRedisSettings, RedisSettings, Settings

    settings = Settings(redis=RedisSettings(tls=True, prefix="team-a"),
                        pods=PodRedisSettings(name="redis-creds", ca_key="ca.pem"))
    job = build_job(attempt(), flow_uid=UID, template=TEMPLATE,
                    redis=RedisEnv.from_settings(settings))

    pod = job["spec"]["template"]["spec"]
    main = pod["containers"][1]
    env = {e["name"]: e for e in main["env"]}
    assert env["KFLOW_REDIS_TLS"]["value"] == "true"
    assert env["KFLOW_REDIS_PREFIX"]["value"] == "team-a"
    ca_file = env["KFLOW_REDIS_TLS_CA_FILE"]["value"]
    mount = next(m for m in main["volumeMounts"] if ca_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "redis-creds",
                                "items": [{"key": "ca.pem",
                                           "path": ca_file.rpartition("/")[2]}]}
    # Without TLS settings the pod spec is what it always was.
    plain = build_job(attempt(), flow_uid=UID, template=TEMPLATE, redis=RedisEnv())
    plain_main = plain["spec"]["template"]["spec"]["containers"][1]
    assert not {e["name"] for e in plain_main["env"]} & {"KFLOW_REDIS_TLS",
                                                          "KFLOW_REDIS_TLS_CA_FILE"}
    assert "volumes" not in plain["spec"]["template"]["spec"] and "volumeMounts" not in plain_main


def test_template_is_not_modified_and_big_data_stays_out_of_the_env() -> None:
    before = json.dumps(TEMPLATE, sort_keys=True)
    job = build_job(attempt(data={"blob": "x" * 40_000}, timeout_ms=None), flow_uid=UID,
                    template=TEMPLATE, redis=RedisEnv())

    assert json.dumps(TEMPLATE, sort_keys=True) == before
    assert "activeDeadlineSeconds" not in job["spec"]
    names = [e["name"] for e in job["spec"]["template"]["spec"]["containers"][1]["env"]]
    assert "KFLOW_DATA" not in names


def test_job_names_are_deterministic_per_attempt_and_valid() -> None:
    name = job_name("orders-7", "load", 2, "tok-123")
    assert name == job_name("orders-7", "load", 2, "tok-123")
    assert name != job_name("orders-7", "load", 3, "tok-124")
    assert name != job_name("orders-7", "load", 2, "tok-999"), "a re-dispatch gets a new Job"
    assert name != job_name("orders-7", "Load", 2, "tok-123")
    long = job_name("a" * 253, "n" * 200, 12, "t")
    for candidate in (name, long, job_name("x.y-", "n", 1, "t")):
        assert len(candidate) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", candidate), candidate


def test_label_values_are_kept_when_legal_and_cleaned_with_a_hash_otherwise() -> None:
    assert label_value("validate-items") == "validate-items"
    long = label_value("n" * 100)
    assert len(long) <= 63 and long != label_value("n" * 101)
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", label_value("_x y_"))


def test_identity_round_trips_through_the_job() -> None:
    job = build_job(attempt(node="Node With Spaces"), flow_uid=UID, template=TEMPLATE,
                    redis=RedisEnv())
    job["metadata"]["namespace"] = "etl"

    ident = job_identity(job)

    assert ident is not None
    assert (ident.flow_uid, ident.flow_name, ident.node, ident.queue, ident.attempt,
            ident.token) == (UID, "orders-7", "Node With Spaces", "warehouse", 2, "tok-123")
    assert job_identity({"metadata": {"name": "other"}}) is None


def _job(*conditions: tuple[str, str], deadline: int | None = None) -> dict[str, object]:
    return {"metadata": {"name": "j"}, "spec": {"activeDeadlineSeconds": deadline},
            "status": {"conditions": [{"type": t, "status": "True", "reason": r}
                                      for t, r in conditions]}}


def _pod(terminated: dict[str, object] | None = None, **status: object) -> dict[str, object]:
    statuses = [{"name": "main", "state": {"terminated": terminated}}] if terminated else []
    return {"metadata": {"name": "p", "creationTimestamp": "2026-11-28T00:00:00Z"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"containerStatuses": statuses, **status}}


def test_job_state_reads_only_terminal_conditions() -> None:
    assert job_state(_job(("Complete", ""))) == "succeeded"
    assert job_state(_job(("Failed", "BackoffLimitExceeded"))) == "failed"
    assert job_state(_job(("FailureTarget", "x"))) == "running"
    assert job_state({"status": {}}) == "running"


def test_failures_name_exit_code_and_message_and_spend_an_attempt() -> None:
    failure = classify_failure(
        _job(("Failed", "BackoffLimitExceeded")),
        [_pod({"exitCode": 1, "reason": "Error", "message": "ValueError: bad row 7"})])
    assert failure.error == "exit code 1 (Error): ValueError: bad row 7"
    assert failure.infrastructure is False

    oom = classify_failure(_job(("Failed", "BackoffLimitExceeded")),
                           [_pod({"exitCode": 137, "reason": "OOMKilled"})])
    assert oom.error == "exit code 137 (OOMKilled)" and not oom.infrastructure


def test_deadline_exceeded_is_a_timeout() -> None:
    failure = classify_failure(_job(("Failed", "DeadlineExceeded"), deadline=3), [])
    assert "timed out after 3s" in failure.error and not failure.infrastructure


def test_evicted_deleted_or_vanished_pods_are_infrastructure_failures() -> None:
    failed = _job(("Failed", "BackoffLimitExceeded"))
    evicted = _pod(reason="Evicted", message="The node was low on memory.")
    disrupted = _pod({"exitCode": 143, "reason": "Error"}, conditions=[
        {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}])
    deleting = _pod({"exitCode": 143, "reason": "Error", "message": "interrupted: SIGTERM"})
    deleting["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:05Z"  # type: ignore[index]

    for pods in ([evicted], [disrupted], [deleting], []):
        assert classify_failure(failed, pods).infrastructure, pods


def test_termination_message_is_the_output_of_an_any_image_node() -> None:
    assert termination_output([_pod({"exitCode": 0, "message": '{"rows": 42}'})]) == (
        True, {"rows": 42})
    assert termination_output([_pod({"exitCode": 0, "message": "plain text\n"})]) == (
        True, "plain text")
    assert termination_output([_pod({"exitCode": 0})]) == (False, None)
    assert termination_output([]) == (False, None)


def test_status_is_bounded_and_carries_conditions_for_kubectl_wait() -> None:
    view = FlowView(uid=UID, namespace="etl", name="orders-7", generation=3, valid=True,
                    missing_queues=("payment",))
    failures = [NodeFailure(node=f"n{i}", error="E" * 5000, attempt=1) for i in range(50)]
    snapshot = FlowSnapshot(phase="Running", total=100_000,
                            counts={"waiting-children": 99_000, "completed": 1_000},
                            done=1_000, started_at_ms=1_764_288_000_000, finished_at_ms=None,
                            failures=failures)

    status = build_status(view, snapshot, max_failures=10)

    assert status["progress"] == "1000/100000" and status["observedGeneration"] == 3
    assert {k: n for k, n in status["counts"].items() if n} == {
        "completed": 1000, "waitingChildren": 99000}
    assert len(status["firstFailures"]) == 10
    assert all(len(f["error"]) <= 500 for f in status["firstFailures"])
    assert len(json.dumps(status)) < 16_000
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Complete"]["status"] == "False"
    assert conditions["QueueMissing"]["status"] == "True"
    assert "QueueMissing: payment" in conditions["QueueMissing"]["message"]

    done = FlowSnapshot(phase="Succeeded", total=2, counts={"completed": 2}, done=2,
                        started_at_ms=1_764_288_000_000, finished_at_ms=1_764_288_090_000)
    finished = build_status(view, done, max_failures=10)
    conditions = {c["type"]: c for c in finished["conditions"]}
    assert conditions["Complete"]["status"] == "True"
    assert conditions["Failed"]["status"] == "False"
    assert "QueueMissing" not in conditions or conditions["QueueMissing"]["status"] == "False"
    assert finished["duration"] == "1m30s" and finished["finishedAt"].endswith("Z")


def test_invalid_flow_status_says_why_and_fails() -> None:
    view = FlowView(uid=UID, namespace="etl", name="bad", valid=False,
                    invalid_message='Flow etl/bad: node "a" is in a cycle')

    status = build_status(view, None, max_failures=10)

    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Failed"
    assert conditions["Valid"]["status"] == "False"
    assert "cycle" in conditions["Valid"]["message"]
    assert conditions["Failed"]["status"] == "True"


def test_a_pod_stuck_before_starting_is_recognised() -> None:
    from kflow.kube.jobs import FATAL_REASONS, stuck_reason

    waiting = {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"name": "main", "state": {"waiting": {"reason": "ErrImageNeverPull",
                                               "message": "image not present"}}}]}}
    starting = {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}

    assert stuck_reason(waiting) == ("ErrImageNeverPull", "image not present")
    assert "ErrImageNeverPull" in FATAL_REASONS
    assert stuck_reason(starting) is None


def test_settings_read_namespaces_as_a_list_or_comma_separated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kflow.settings import Settings

    mp = monkeypatch
    mp.setenv("KFLOW_NAMESPACES", "etl, payments")
    mp.setenv("KFLOW_STATUS_INTERVAL_SECONDS", "2.5")
    settings = Settings()
    assert settings.watching.namespaces == ["etl", "payments"]
    assert settings.status.interval_seconds == 2.5
    mp.setenv("KFLOW_NAMESPACES", '["a"]')
    assert Settings().watching.namespaces == ["a"]
    mp.delenv("KFLOW_NAMESPACES")
    assert Settings().watching.namespaces == [] and Settings().pods.name == "kflow-redis"
