"""`kubectl kflow` and `kflow` against kflow installed by its chart: the real kubectl runs the
plugin from PATH, the CLI reaches the chart's kflow API through the API server's service proxy
with a user's own kubeconfig (a ServiceAccount token user) and acts as that user: a `view`
user reads flows, nodes, logs and graphs in its namespace, gets 403 in another namespace and
cannot retry; an `edit` user submits, retries a failed node and waits for the flow to succeed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kflow.cli.client import EXIT_DENIED, EXIT_FLOW_FAILED, EXIT_NOT_FOUND
from kflow.devkit.checkout import REPO
from kflow.devkit.server import service_account_token
from tests.e2e.installed.conftest import Installed, gate_queue, until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BIN = REPO / ".venv" / "bin"
@dataclass
class User:
    """A kubeconfig whose user is a ServiceAccount token, its context in `namespace`."""

    name: str
    kubeconfig: Path
    installed: Installed

    def env(self) -> dict[str, str]:
        inst = self.installed.inst
        return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}",
                "KUBECONFIG": str(self.kubeconfig), "KFLOW_API": f"{inst.namespace}/"
                f"{inst.fullname}-api", "NO_COLOR": "1"}

    def kflow(self, *args: str, stdin: str | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "kflow"), *args], env=self.env(), input=stdin,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def kubectl_kflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The plugin as kubectl runs it: `kubectl kflow …`, kubectl-kflow found on PATH."""
        return subprocess.run([self.installed.kube.kubectl, "kflow", *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=False)


def token_kubeconfig(installed: Installed, path: Path, token: str) -> Path:
    admin = yaml.safe_load(Path(installed.kube.kubeconfig).read_text())
    current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == current["context"]["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "user",
        "clusters": [cluster],
        "contexts": [{"name": "user", "context": {"cluster": cluster["name"], "user": "user",
                                                  "namespace": installed.flows}}],
        "users": [{"name": "user", "user": {"token": token}}],
    }))
    return path


@pytest.fixture(scope="module")
def users(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> dict[str, User]:
    """`viewer` bound to the ClusterRole view, `editor` to edit, both in the flows namespace
    only (the chart aggregates the flows rights into those roles)."""
    folder = tmp_path_factory.mktemp("cli-users")
    made = {}
    for name, role in (("viewer", "view"), ("editor", "edit")):
        token = service_account_token(installed.kube, installed.flows, f"cli-{name}", role,
                                      installed.flows)
        made[name] = User(name, token_kubeconfig(installed, folder / name, token), installed)
    return made


@pytest.fixture(scope="module")
def order(installed: Installed, users: dict[str, User]) -> str:
    """The order workflow, submitted by the editor with `kubectl kflow submit --watch`: the
    flow's event stream, one line per change (not a terminal), then the final tree."""
    done = users["editor"].kubectl_kflow(
        "submit", str(REPO / "examples" / "order-workflow.yaml"), "--watch")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Flow {installed.flows}/order-a17 created" in done.stdout
    assert "process-payment: completed" in done.stdout
    assert f"Flow {installed.flows}/order-a17: Succeeded 8/8 done" in done.stdout
    return "order-a17"


def test_a_view_user_reads_the_flow_its_tree_results_logs_and_graph(
        installed: Installed, users: dict[str, User], order: str) -> None:
    viewer = users["viewer"]
    got = viewer.kubectl_kflow("get", order)
    assert got.returncode == 0, got.stderr
    assert f"Flow {installed.flows}/order-a17: Succeeded 8/8 done (8 completed)" in got.stdout
    assert re.search(r"duration \d", got.stdout)
    assert re.search(r'process-payment \[payment\] completed in [0-9.]+s (→|->) '
                     r'\{"paymentId":"pay-A-17"', got.stdout), got.stdout
    assert "(children drawn above)" in got.stdout  # the diamond's second parent refers back

    listed = viewer.kflow("list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    flows = {f["name"]: f for f in json.loads(listed.stdout)["items"]}
    assert flows[order]["phase"] == "Succeeded" and flows[order]["total"] == 8

    logs = viewer.kflow("logs", order, "process-payment")
    assert logs.returncode == 0 and "charged 55.00 to customer C-9" in logs.stdout

    dot = viewer.kflow("graph", order, "--format", "dot")
    assert dot.returncode == 0
    labels = dict(re.findall(r'^\s+(n\d+) \[label="([^" ]+) ', dot.stdout, re.M))
    edges = re.findall(r"^\s+(n\d+) -> (n\d+);$", dot.stdout, re.M)
    assert len(labels) == 8
    payment = next(node for node, name in labels.items() if name == "process-payment")
    assert sorted(labels[to] for frm, to in edges if frm == payment) == [
        "prepare-shipping", "reserve-inventory"]

    watched = viewer.kflow("watch", order, timeout=60)  # an ended flow: its final tree
    assert watched.returncode == 0 and "Succeeded 8/8 done" in watched.stdout


def test_a_view_user_is_refused_another_namespace_and_retry(
        installed: Installed, users: dict[str, User], order: str) -> None:
    viewer = users["viewer"]
    other = viewer.kubectl_kflow("list", "-n", installed.other)
    assert other.returncode == EXIT_DENIED, other.stdout + other.stderr
    assert other.stderr.startswith("error: ") and installed.other in other.stderr
    assert other.stderr.count("\n") == 1 and other.stdout == ""
    get_other = viewer.kflow("get", order, "-n", installed.other)
    assert get_other.returncode == EXIT_DENIED, get_other.stderr

    retry = viewer.kflow("retry", order)
    assert retry.returncode == EXIT_DENIED, retry.stdout + retry.stderr
    assert "patch" in retry.stderr and installed.flows in retry.stderr
    delete = viewer.kflow("delete", order)
    assert delete.returncode == EXIT_DENIED, delete.stderr
    assert viewer.kflow("get", order, "-o", "json").returncode == 0  # still there, readable

    missing = viewer.kflow("get", "no-such-flow")
    assert missing.returncode == EXIT_NOT_FOUND and "no-such-flow" in missing.stderr


def test_a_bad_token_and_a_certificate_user_without_token_are_denied(
        installed: Installed, users: dict[str, User]) -> None:
    bad = users["viewer"].kflow("list", "--token", "not-a-token")
    assert bad.returncode == EXIT_DENIED, bad.stdout + bad.stderr
    env = {**users["viewer"].env(), "KUBECONFIG": str(installed.kube.kubeconfig)}
    env.pop("KFLOW_TOKEN", None)
    admin = subprocess.run([str(BIN / "kflow"), "list", "-n", installed.flows], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert admin.returncode == EXIT_DENIED
    assert "client certificate" in admin.stderr and "kubectl create token" in admin.stderr


def gated_flow() -> str:
    queue = gate_queue("cli-gate")
    flow = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
            "metadata": {"generateName": "cli-retry-"},
            "spec": {"defaults": {"attempts": 1}, "nodes": [
                {"name": "report", "queue": "cli-gate", "data": {}, "children": [
                    {"name": "gated", "queue": "cli-gate", "data": {}}]}]}}
    return yaml.safe_dump_all([queue, flow])


def test_an_edit_user_submits_from_stdin_retries_the_failed_node_and_waits(
        installed: Installed, users: dict[str, User]) -> None:
    editor = users["editor"]
    failed = editor.kflow("submit", "-", "--wait", "--timeout", "300", stdin=gated_flow())
    assert failed.returncode == EXIT_FLOW_FAILED, failed.stdout + failed.stderr
    name = re.search(r"Flow \S+/(cli-retry-\w+) created", failed.stdout).group(1)
    assert f"{name}: Failed" in failed.stdout

    got = editor.kflow("get", name)
    assert "gated [cli-gate] failed" in got.stdout and "failures:" in got.stdout
    logs = editor.kflow("logs", name, "gated", "--attempt", "1")
    assert "the gate is closed" in logs.stdout, logs.stdout + logs.stderr

    installed.open_gate("cli-gate")
    # The flow says Failed until the operator takes the retry: --wait waits past that.
    retried = editor.kubectl_kflow("retry", name, "--wait", "--timeout", "300", "-o", "json")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "retry of its failed nodes requested" in retried.stderr
    assert json.loads(retried.stdout)["phase"] == "Succeeded"
    waited = editor.kflow("wait", name, "--timeout", "60")
    assert waited.returncode == 0 and f"{name}: Succeeded" in waited.stdout
    node = json.loads(editor.kflow("get", name, "gated", "-o", "json").stdout)
    assert node["state"] == "completed" and node["result"] is not None, node
    # The operator keeps an attempt's log when it deletes the attempt's Job, just after.
    until("the rerun's log", lambda: "the gate is open" in editor.kflow(
        "logs", name, "gated").stdout, timeout=120, every=2)
    deleted = editor.kflow("delete", name)
    assert deleted.returncode == 0 and f"Flow {installed.flows}/{name} deleted" in deleted.stdout


def test_an_edit_user_submits_a_template_and_a_flow_made_from_it(
        installed: Installed, users: dict[str, User], tmp_path: Path) -> None:
    pipelines = REPO / "examples" / "gitops" / "pipelines"
    flow = yaml.safe_load((pipelines / "etl-backfill.flow.yaml").read_text())
    flow["metadata"] = {"generateName": "cli-etl-"}
    file = tmp_path / "etl.yaml"
    file.write_text((pipelines / "queues.yaml").read_text() + "\n---\n"
                    + (pipelines / "etl.flowtemplate.yaml").read_text() + "\n---\n"
                    + yaml.safe_dump(flow))
    done = users["editor"].kflow("submit", str(file), "--wait", "--timeout", "300")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"FlowTemplate {installed.flows}/etl created" in done.stdout
    name = re.search(r"Flow \S+/(cli-etl-\w+) created", done.stdout).group(1)
    got = users["viewer"].kflow("get", name)
    assert f"{name}: Succeeded 4/4 done" in got.stdout, got.stdout
    assert "made from FlowTemplate etl (generation 1)" in got.stdout
    # The same file again: the template exists and is left as it is; a new run is made.
    again = users["editor"].kflow("submit", str(file))
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"FlowTemplate {installed.flows}/etl exists, left as it is" in again.stdout


@pytest.fixture
def ui(users: dict[str, User]) -> Iterator[str]:
    proc = subprocess.Popen([str(BIN / "kflow"), "ui", "--port", "0"], env=users["viewer"].env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://\S+/", line)
        assert found, line + (proc.stderr.read() if proc.stderr else "")
        yield found.group()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_kflow_ui_forwards_to_the_api_as_the_user(installed: Installed, ui: str,
                                                  order: str) -> None:
    with urllib.request.urlopen(ui + "api/v1/whoami", timeout=30) as answer:
        me = json.loads(answer.read())
    assert me["username"] == f"system:serviceaccount:{installed.flows}:cli-viewer"
    url = ui + f"api/v1/namespaces/{installed.flows}/flows/{order}/events"
    with urllib.request.urlopen(url, timeout=60) as stream:  # an ended flow: flow, then end
        body = stream.read().decode()
    assert "event: flow" in body and "event: end" in body, body[:500]


def test_kubectl_completes_the_plugin_through_kubectl_complete_kflow() -> None:
    from kflow.devkit.cluster import bin_dir

    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run([str(bin_dir() / "kubectl"), "__complete", "kflow", "re"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines[:-1]] == ["resume", "retry"]
    assert lines[-1] == ":4"
