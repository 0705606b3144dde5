"""`kubectl apply` gets `kflow lint`'s verdict from the operator's admission webhook.

The operator runs as a host process in kopf's managed mode: it creates a
ValidatingWebhookConfiguration of its own (named after the test's namespace) pointing the API
server at https://127.0.0.1:<port>, with a certificate made here by openssl. The webhook judges
only Flows and Queues in the namespace this operator watches; the configuration is deleted
when the module's tests end, whatever happened, so no other test ever meets it.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kflow.devkit.manifests import flow, pod_template
from kflow.devkit.operator import OperatorWorld, Scenario

pytestmark = [pytest.mark.cluster]


def make_certificate(directory: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 (EC P-256), as the chart would mount them."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=kflow-test-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "san.ext")
    return {name: str(directory / f"{name}") for name in ("ca.crt", "tls.crt", "tls.key")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Apply:
    """`kubectl apply` of one manifest into the scenario's namespace, as a user runs it."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def __call__(self, doc: dict[str, Any], *, dry_run: bool = False) -> \
            subprocess.CompletedProcess[str]:
        args = ["apply", "-n", self.scenario.namespace, "-f", "-"]
        if dry_run:
            args.append("--dry-run=server")
        return self.scenario.kube(*args, input=json.dumps(doc), check=False)

    def refused(self, doc: dict[str, Any]) -> str:
        result = self(doc)
        assert result.returncode != 0, f"accepted: {result.stdout}"
        assert "denied the request" in result.stderr, result.stderr
        kind, name = doc["kind"].lower(), doc["metadata"]["name"]
        found = self.scenario.kube("get", kind, name, "-n", self.scenario.namespace,
                                   check=False)
        assert found.returncode != 0, f"{kind} {name} was stored despite the refusal"
        return result.stderr


PROBE = flow("probe", [{"name": "a", "queue": "q", "children": ["a-typo"]}])


@pytest.fixture(scope="module")
def apply(operator_world: OperatorWorld,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apply]:
    """A namespace and an operator serving the webhook for it; the webhook removed at the end."""
    with operator_world.scenario(start=False) as scenario:
        configuration = f"{scenario.namespace}.kflow.dev"
        try:
            certs = make_certificate(tmp_path_factory.mktemp("webhook-certs"))
            scenario.operator.env.update({
                "KFLOW_WEBHOOK_ENABLED": "true",
                "KFLOW_WEBHOOK_LISTEN": "127.0.0.1",
                "KFLOW_WEBHOOK_HOST": "127.0.0.1",
                "KFLOW_WEBHOOK_PORT": str(free_port()),
                "KFLOW_WEBHOOK_CERT_FILE": certs["tls.crt"],
                "KFLOW_WEBHOOK_KEY_FILE": certs["tls.key"],
                "KFLOW_WEBHOOK_CA_FILE": certs["ca.crt"],
                "KFLOW_WEBHOOK_MANAGED": "true",
                "KFLOW_WEBHOOK_CONFIGURATION_NAME": configuration,
            })
            scenario.operator.start()
            applying = Apply(scenario)
            # Until the API server has loaded the configuration, applies are not sent to the
            # webhook: wait until a bad flow is refused (a server-side dry run stores nothing).
            def probe_refused() -> bool:
                return "denied the request" in applying(PROBE, dry_run=True).stderr

            scenario.wait_for("the admission webhook to refuse a bad flow", probe_refused,
                              timeout=180)
            yield applying
        finally:
            scenario.kube("delete", "validatingwebhookconfiguration", configuration,
                          "--ignore-not-found", check=False)


def test_an_inline_childs_bad_option_is_refused_naming_the_node_and_field(apply: Apply) -> None:
    stderr = apply.refused(flow("inline-linear", [
        {"name": "report", "queue": "q", "children": [
            {"name": "count", "queue": "q", "opts": {"backoff": {"type": "linear"}}}]}]))

    assert 'node "count": spec.nodes[0].children[0].opts.backoff.type must be one of ' \
           "'fixed' or 'exponential' (got 'linear')" in stderr


def test_an_unknown_child_is_refused_with_did_you_mean(apply: Apply) -> None:
    stderr = apply.refused(flow("typo", [
        {"name": "load", "queue": "q", "children": ["transfrom"]},
        {"name": "transform", "queue": "q"}]))

    assert 'node "load" lists child "transfrom", which no node defines ' \
           '(did you mean "transform"?)' in stderr


def test_a_for_each_from_naming_no_node_and_a_when_that_does_not_compile_are_refused(
        apply: Apply) -> None:
    stderr = apply.refused(flow("runtime-graph", [
        {"name": "merge", "queue": "q", "children": ["process"],
         "when": 'outcomes["process"] = "completed"'},
        {"name": "process", "queue": "q", "forEach": {"from": "list-file", "path": "files"}},
        {"name": "list-files", "queue": "q"}]))

    assert 'node "process" runs forEach over the value of node "list-file", which no node ' \
           'defines (did you mean "list-files"?) (field spec.nodes[1].forEach.from)' in stderr
    assert 'node "merge": when: "outcomes["process"] = "completed"" does not compile:' in stderr
    assert "spec.nodes[0].when" in stderr


def test_a_cycle_is_refused_naming_its_path(apply: Apply) -> None:
    stderr = apply.refused(flow("cycle", [
        {"name": "a", "queue": "q", "children": [
            {"name": "b", "queue": "q", "children": ["c"]}]},
        {"name": "c", "queue": "q", "children": ["a"]}]))

    assert 'the nodes form a cycle: "a" -> "b" -> "c" -> "a"' in stderr


def test_a_schema_error_and_a_graph_error_are_refused_in_one_message(apply: Apply) -> None:
    stderr = apply.refused(flow("both", [
        {"name": "load", "queue": "q", "children": [
            "transfrom",
            {"name": "extract", "queue": "q", "opts": {"attempts": 0}}]},
        {"name": "transform", "queue": "q"}]))

    assert 'node "extract": spec.nodes[0].children[1].opts.attempts must be at least 1' in stderr
    assert 'node "load" lists child "transfrom"' in stderr


def test_a_queue_the_crd_lets_through_is_refused_on_create_and_on_update(apply: Apply) -> None:
    def queue(per: str) -> dict[str, Any]:
        return {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": "slow"},
                "spec": {"mode": "Job", "rateLimit": {"max": 1, "per": per}}}

    stderr = apply.refused(queue("0s"))
    assert "Queue " in stderr and "spec.rateLimit.per must be longer than 0" in stderr

    assert apply(queue("1s")).returncode == 0
    update = apply(queue("0s"))
    assert update.returncode != 0 and "spec.rateLimit.per must be longer than 0" in update.stderr
    stored = apply.scenario.kube.json("queue", "slow", "-n", apply.scenario.namespace)
    assert stored["spec"]["rateLimit"]["per"] == "1s"


def test_a_valid_flow_is_accepted_and_compiled_by_the_operator(apply: Apply) -> None:
    good = flow("good", [{"name": "report", "queue": "q", "children": [
        {"name": "count", "queue": "q", "opts": {"backoff": {"type": "exponential",
                                                             "delay": "1s"}}}]}],
                suspend=True)  # nothing to dispatch: the test is about admission

    result = apply(good)

    assert result.returncode == 0, result.stderr
    scenario = apply.scenario
    scenario.wait_for("the Valid condition", lambda: any(
        c["type"] == "Valid" for c in (scenario.get_flow("good").get("status") or {}).get(
            "conditions") or []), timeout=60)
    valid = next(c for c in scenario.get_flow("good")["status"]["conditions"]
                 if c["type"] == "Valid")
    assert valid["status"] == "True", valid


def test_flows_in_namespaces_the_operator_does_not_watch_are_not_judged(apply: Apply) -> None:
    # Kopf's managed configuration has no namespace selector; the handlers' filter lets other
    # namespaces' objects through, so this operator never refuses what it would not run.
    args = ["apply", "--dry-run=server", "-n", "default", "-f", "-"]

    result = apply.scenario.kube(*args, input=json.dumps(PROBE), check=False)

    assert result.returncode == 0, result.stderr


def test_a_queue_breaking_the_pod_policy_is_refused_naming_each_field(apply: Apply) -> None:
    # The harness's operator allows the host network and host mounts its own pods need, and
    # no ServiceAccount; privileged containers are refused as by default.
    template = pod_template(["tests.e2e.operator_pods.nodes:echo"])
    template["spec"]["serviceAccountName"] = "cluster-admin"
    template["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    doc = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": "root"},
           "spec": {"mode": "Job", "template": template}}

    stderr = apply.refused(doc)

    where = f"Queue {apply.scenario.namespace}/root"
    assert f"{where}: spec.template.spec.serviceAccountName: ServiceAccount 'cluster-admin' " \
           "is not allowed by the operator's pod policy (podPolicy.serviceAccounts" in stderr
    assert f"{where}: spec.template.spec.containers[0].securityContext.privileged is not " \
           "allowed by the operator's pod policy (podPolicy.allowPrivileged" in stderr
    del template["spec"]["serviceAccountName"], template["spec"]["containers"][0][
        "securityContext"]
    assert apply(doc).returncode == 0
