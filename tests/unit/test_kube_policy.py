"""The pod policy: every rule names its field from the Queue, says the fix, and defaults keep
what a template sets."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.kube.policy import BASELINE_CAPABILITIES, verdict, violations, with_defaults
from kflow.settings import PodPolicySettings

STRICT = PodPolicySettings()
RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
              "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def template(**spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "main", "image": "runner"}], **spec}}


def paths(tmpl: dict[str, Any], policy: PodPolicySettings = STRICT) -> list[str]:
    return [v.path for v in violations(tmpl, policy)]


def test_a_plain_template_breaks_nothing_under_the_strict_default() -> None:
    tmpl = template(automountServiceAccountToken=True, serviceAccountName="default",
                    volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}],
                    hostNetwork=False, hostPID=False)
    tmpl["spec"]["containers"][0]["securityContext"] = {
        **RESTRICTED, "privileged": False, "capabilities": {"add": ["NET_BIND_SERVICE"]}}

    assert violations(tmpl, STRICT) == []
    assert violations(None, STRICT) == [] and violations({}, STRICT) == []


@pytest.mark.parametrize(("field", "setting", "allowed"), [
    ("hostNetwork", "podPolicy.allowHostNetwork", {"allow_host_network": True}),
    ("hostPID", "podPolicy.allowHostPID", {"allow_host_pid": True}),
    ("hostIPC", "podPolicy.allowHostPID", {"allow_host_pid": True}),
])
def test_host_namespaces_are_refused_naming_the_field_and_the_helm_value(
        field: str, setting: str, allowed: dict[str, bool]) -> None:
    tmpl = template(**{field: True})

    [found] = violations(tmpl, STRICT)

    assert found.path == f"spec.template.spec.{field}"
    assert found.message.startswith(f"spec.template.spec.{field} is not allowed by the "
                                    f"operator's pod policy ({setting} in the Helm values")
    assert paths(tmpl, PodPolicySettings(**allowed)) == []  # type: ignore[arg-type]


def test_a_host_path_volume_is_refused_at_its_index_with_the_alternatives() -> None:
    tmpl = template(volumes=[{"name": "cfg", "configMap": {"name": "cfg"}},
                             {"name": "root", "hostPath": {"path": "/"}}])

    [found] = violations(tmpl, STRICT)

    assert found.path == "spec.template.spec.volumes[1].hostPath"
    assert "volume 'root' mounts the node's '/'" in found.message
    assert "podPolicy.allowHostPath" in found.message and "emptyDir" in found.message
    assert paths(tmpl, PodPolicySettings(allow_host_path=True)) == []


def test_a_service_account_must_be_listed_and_the_message_lists_the_allowed_ones() -> None:
    tmpl = template(serviceAccountName="cluster-admin-sa")

    [found] = violations(tmpl, PodPolicySettings(service_accounts=["runner", "etl"]))

    assert found.path == "spec.template.spec.serviceAccountName"
    assert "ServiceAccount 'cluster-admin-sa' is not allowed" in found.message
    assert "podPolicy.serviceAccounts" in found.message
    assert "allowed: 'runner', 'etl'" in found.message
    assert "allowed: none" in violations(tmpl, STRICT)[0].message
    assert paths(template(serviceAccountName="etl"),
                 PodPolicySettings(service_accounts=["runner", "etl"])) == []


def test_the_deprecated_service_account_alias_is_checked_too() -> None:
    assert paths(template(serviceAccount="admin")) == ["spec.template.spec.serviceAccount"]


@pytest.mark.parametrize("kind", ["containers", "initContainers", "ephemeralContainers"])
def test_privileged_and_escalation_are_refused_in_every_container_list(kind: str) -> None:
    tmpl = template()
    tmpl["spec"][kind] = [
        {"name": "ok", "securityContext": RESTRICTED},
        {"name": "bad", "securityContext": {"privileged": True,
                                            "allowPrivilegeEscalation": True}},
    ]

    found = violations(tmpl, STRICT)

    where = f"spec.template.spec.{kind}[1].securityContext"
    assert [v.path for v in found] == [f"{where}.privileged", f"{where}.allowPrivilegeEscalation"]
    assert all("podPolicy.allowPrivileged" in v.message for v in found)
    assert paths(tmpl, PodPolicySettings(allow_privileged=True)) == []


def test_only_the_baseline_capabilities_may_be_added_unless_privileged_is_allowed() -> None:
    tmpl = template()
    tmpl["spec"]["containers"][0]["securityContext"] = {
        "capabilities": {"add": ["CHOWN", "SYS_ADMIN", "cap_net_admin", "ALL"]}}

    found = violations(tmpl, STRICT)

    where = "spec.template.spec.containers[0].securityContext.capabilities"
    assert [v.path for v in found] == [f"{where}.add[1]", f"{where}.add[2]", f"{where}.add[3]"]
    assert "capability 'SYS_ADMIN' is not allowed" in found[0].message
    assert "NET_BIND_SERVICE" in found[0].message  # the message lists what may be added
    assert {"SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"}.isdisjoint(BASELINE_CAPABILITIES)
    assert paths(tmpl, PodPolicySettings(allow_privileged=True)) == []


def test_a_host_port_needs_the_host_network_setting() -> None:
    tmpl = template()
    tmpl["spec"]["containers"][0]["ports"] = [{"containerPort": 80},
                                              {"containerPort": 81, "hostPort": 81}]

    assert paths(tmpl) == ["spec.template.spec.containers[0].ports[1].hostPort"]
    assert paths(tmpl, PodPolicySettings(allow_host_network=True)) == []


def test_every_violation_is_reported_at_once_in_one_verdict() -> None:
    tmpl = template(hostNetwork=True, hostPID=True, serviceAccountName="admin",
                    volumes=[{"name": "root", "hostPath": {"path": "/"}}])

    found = violations(tmpl, STRICT)

    assert [v.path for v in found] == [
        "spec.template.spec.serviceAccountName", "spec.template.spec.hostNetwork",
        "spec.template.spec.hostPID", "spec.template.spec.volumes[0].hostPath"]
    assert verdict(found).count("not allowed by the operator's pod policy") == 4


def test_a_malformed_template_is_judged_without_crashing() -> None:
    assert violations({"spec": "nonsense"}, STRICT) == []
    assert violations({"spec": {"containers": "x", "volumes": [1, None]}}, STRICT) == []


def test_defaults_fill_only_containers_that_set_no_security_context() -> None:
    policy = PodPolicySettings(default_security_context=RESTRICTED)
    own = {"runAsUser": 1000}
    tmpl = {"metadata": {"labels": {"a": "b"}}, "spec": {
        "initContainers": [{"name": "init"}],
        "containers": [{"name": "a"}, {"name": "b", "securityContext": own},
                       {"name": "c", "securityContext": {}}],
    }}

    result = with_defaults(tmpl, policy)

    assert result is not None
    init, = result["spec"]["initContainers"]
    a, b, c = result["spec"]["containers"]
    assert init["securityContext"] == RESTRICTED and a["securityContext"] == RESTRICTED
    assert b["securityContext"] == own, "what a template sets is kept, not merged"
    assert c["securityContext"] == RESTRICTED, "an empty securityContext sets nothing"
    assert "securityContext" not in tmpl["spec"]["containers"][0], "the input is not changed"
    a["securityContext"]["runAsNonRoot"] = False
    assert c["securityContext"]["runAsNonRoot"] is True, "each container gets its own copy"
    assert result["metadata"] == {"labels": {"a": "b"}}


def test_no_default_leaves_the_template_as_written() -> None:
    tmpl = template()

    assert with_defaults(tmpl, STRICT) == tmpl
    assert with_defaults(None, PodPolicySettings(default_security_context=RESTRICTED)) is None
