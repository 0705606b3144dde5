"""The chart's podPolicy values reach the operator as its pod policy, and the default lets the
project's own examples run. No cluster needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kflow.devkit.checkout import REPO
from kflow.kube.policy import violations, with_defaults
from kflow.settings import PodPolicySettings
from tests.chart.conftest import Helm

URL = "redis.url=redis://redis.example:6379/0"


def operator_policy(helm: Helm, monkeypatch: pytest.MonkeyPatch,
                    *values: str) -> PodPolicySettings:
    """The PodPolicySettings the operator reads from the rendered Deployment's env."""
    deployment = helm.template(URL, *values).get("Deployment", "kflow")
    env = {item["name"]: item["value"]
           for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
           if item["name"].startswith("KFLOW_POLICY_")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return PodPolicySettings()


def test_the_default_policy_allows_nothing_and_gives_a_restricted_security_context(
        helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = operator_policy(helm, monkeypatch)

    assert policy.service_accounts == []
    assert not (policy.allow_host_network or policy.allow_host_pid or policy.allow_host_path
                or policy.allow_privileged)
    assert policy.default_security_context == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def test_each_value_reaches_the_operator(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = operator_policy(
        helm, monkeypatch, "podPolicy.serviceAccounts={runner,etl}",
        "podPolicy.allowHostNetwork=true", "podPolicy.allowHostPID=true",
        "podPolicy.allowHostPath=true", "podPolicy.allowPrivileged=true",
        "podPolicy.defaultSecurityContext=null")

    assert policy.service_accounts == ["runner", "etl"]
    assert policy.allow_host_network and policy.allow_host_pid
    assert policy.allow_host_path and policy.allow_privileged
    assert policy.default_security_context == {}


def test_a_wrong_value_is_refused_by_the_schema(helm: Helm) -> None:
    assert "allowHostNetwork" in helm.template_fails(URL, "podPolicy.allowHostNetwork=yes")
    assert "allowhostpath" in helm.template_fails(URL, "podPolicy.allowhostpath=true").lower()


def example_templates() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Queue" and doc["spec"].get("template"):
                found.append((f"{Path(path).name}:{doc['metadata']['name']}",
                              doc["spec"]["template"]))
    return found


def test_the_examples_pass_the_default_policy_and_get_the_default_context(
        helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = operator_policy(helm, monkeypatch)
    templates = example_templates()
    assert len(templates) >= 5

    for name, template in templates:
        assert violations(template, policy) == [], name
        result = with_defaults(template, policy)
        assert result is not None
        for container in result["spec"]["containers"]:
            assert container["securityContext"]["runAsNonRoot"] is True, name
