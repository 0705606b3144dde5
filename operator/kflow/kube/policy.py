"""The administrator's pod policy: what a Queue's pod template may set, and the defaults it gets.

After Argo's Workflow Restrictions: whoever may create a Queue must not thereby run any pod
with any ServiceAccount of the namespace. `violations` lists every field of a template the
policy (`kflow.settings.PodPolicySettings`, the chart's `podPolicy` values) does not allow,
with its path from the Queue (`spec.template.spec.hostNetwork`); `with_defaults` gives the
containers that set no securityContext the policy's default one. Pure: no Kubernetes calls,
so the operator (Queue status) and the admission webhook give the same verdict.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kflow.settings import PodPolicySettings

TEMPLATE_PATH = "spec.template"
# The container lists of a pod spec; ephemeral containers cannot be created with a pod, but a
# template that lists them is checked all the same.
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
# The capabilities a container may add while privileged pods are not allowed: the Pod Security
# Standards' "baseline" list (the container runtime's default set). Anything else (SYS_ADMIN,
# NET_ADMIN, SYS_PTRACE, BPF, ALL, ...) reaches the node or other pods' traffic.
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
# The ServiceAccount a pod gets when its template names none; naming it changes nothing.
DEFAULT_SERVICE_ACCOUNT = "default"


@dataclass(frozen=True)
class Violation:
    """One field of a pod template the policy does not allow."""

    path: str  # from the Queue: spec.template.spec.containers[1].securityContext.privileged
    message: str  # the whole line: the path, the value, the setting that would allow it

    def __str__(self) -> str:
        return self.message


def _setting(value_name: str, env: str) -> str:
    return (f"not allowed by the operator's pod policy (podPolicy.{value_name} in the Helm "
            f"values, {env} for the operator)")


def _flag(path: str, value_name: str, env: str, fix: str) -> Violation:
    return Violation(path, f"{path} is {_setting(value_name, env)}; {fix}")


def violations(template: Mapping[str, Any] | None,
               policy: PodPolicySettings) -> list[Violation]:
    """Every field of the Queue's pod template that the policy does not allow, in field order.

    `automountServiceAccountToken` is not one: the token is the allowed ServiceAccount's.
    """
    found: list[Violation] = []
    spec = (template or {}).get("spec")
    if not isinstance(spec, Mapping):
        return found
    base = f"{TEMPLATE_PATH}.spec"
    found += _service_account(spec, base, policy)
    if spec.get("hostNetwork") is True and not policy.allow_host_network:
        found.append(_flag(f"{base}.hostNetwork", "allowHostNetwork",
                           "KFLOW_POLICY_ALLOW_HOST_NETWORK",
                           "remove it (pods reach Services through the cluster network)"))
    for field in ("hostPID", "hostIPC"):
        if spec.get(field) is True and not policy.allow_host_pid:
            found.append(_flag(f"{base}.{field}", "allowHostPID", "KFLOW_POLICY_ALLOW_HOST_PID",
                               "remove it"))
    if not policy.allow_host_path:
        for index, volume in _items(spec.get("volumes")):
            if "hostPath" in volume:
                path = (volume.get("hostPath") or {}).get("path")
                found.append(_flag(
                    f"{base}.volumes[{index}].hostPath", "allowHostPath",
                    "KFLOW_POLICY_ALLOW_HOST_PATH",
                    f"volume {volume.get('name')!r} mounts the node's {path!r}; use a "
                    "configMap, secret, emptyDir or persistentVolumeClaim volume instead"))
    for kind in CONTAINER_LISTS:
        for index, container in _items(spec.get(kind)):
            found += _container(container, f"{base}.{kind}[{index}]", policy)
    return found


def _service_account(spec: Mapping[str, Any], base: str,
                     policy: PodPolicySettings) -> list[Violation]:
    # serviceAccount is the deprecated alias Kubernetes still honours when the name is unset.
    found = []
    for field in ("serviceAccountName", "serviceAccount"):
        account = spec.get(field)
        if not account or account == DEFAULT_SERVICE_ACCOUNT \
                or account in policy.service_accounts:
            continue
        allowed = ", ".join(repr(a) for a in policy.service_accounts) or "none"
        found.append(Violation(
            f"{base}.{field}",
            f"{base}.{field}: ServiceAccount {account!r} is "
            f"{_setting('serviceAccounts', 'KFLOW_POLICY_SERVICE_ACCOUNTS')}; allowed: "
            f"{allowed}; remove it to run as the namespace's default ServiceAccount, or ask "
            "the administrator to allow it"))
    return found


def _container(container: Mapping[str, Any], where: str,
               policy: PodPolicySettings) -> list[Violation]:
    found: list[Violation] = []
    if not policy.allow_host_network:
        for index, port in _items(container.get("ports")):
            if port.get("hostPort"):
                found.append(_flag(f"{where}.ports[{index}].hostPort", "allowHostNetwork",
                                   "KFLOW_POLICY_ALLOW_HOST_NETWORK",
                                   "remove it (a Service reaches the containerPort)"))
    context = container.get("securityContext")
    if not isinstance(context, Mapping) or policy.allow_privileged:
        return found
    at = f"{where}.securityContext"
    if context.get("privileged") is True:
        found.append(_flag(f"{at}.privileged", "allowPrivileged",
                           "KFLOW_POLICY_ALLOW_PRIVILEGED", "remove it"))
    if context.get("allowPrivilegeEscalation") is True:
        found.append(_flag(f"{at}.allowPrivilegeEscalation", "allowPrivileged",
                           "KFLOW_POLICY_ALLOW_PRIVILEGED", "set it to false or remove it"))
    added = (context.get("capabilities") or {}).get("add")
    for index, capability in enumerate(added if isinstance(added, list) else []):
        name = str(capability).upper().removeprefix("CAP_")
        if name not in BASELINE_CAPABILITIES:
            found.append(Violation(
                f"{at}.capabilities.add[{index}]",
                f"{at}.capabilities.add[{index}]: capability {capability!r} is "
                f"{_setting('allowPrivileged', 'KFLOW_POLICY_ALLOW_PRIVILEGED')}; only the "
                f"baseline ones may be added ({', '.join(sorted(BASELINE_CAPABILITIES))})"))
    return found


def _items(value: Any) -> list[tuple[int, Mapping[str, Any]]]:
    """The mappings of a list field with their indexes (a malformed field has none)."""
    if not isinstance(value, list):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, Mapping)]


def with_defaults(template: Mapping[str, Any] | None,
                  policy: PodPolicySettings) -> dict[str, Any] | None:
    """The template with the policy's default securityContext on every container and init
    container that sets none (an empty one counts as none); what a template sets is kept."""
    if template is None or not policy.default_security_context:
        return None if template is None else dict(template)
    result = copy.deepcopy(dict(template))
    spec = result.get("spec")
    if not isinstance(spec, dict):
        return result
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            if isinstance(container, dict) and not container.get("securityContext"):
                container["securityContext"] = copy.deepcopy(policy.default_security_context)
    return result


def verdict(violated: list[Violation]) -> str:
    """One message for a Queue's condition, Event or admission refusal: every violation."""
    return "; ".join(v.message for v in violated)
