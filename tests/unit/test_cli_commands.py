"""The CLI's pure parts: arguments, lint of directories and stdin, graphs of a local file,
kubeconfig handling, error answers and their exit codes, completion."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
import yaml

from kflow.api import Flow, load_manifests
from kflow.cli.client import (
    EXIT_DENIED,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    ApiLocation,
    CliError,
    Connection,
    KflowApi,
    load_connection,
)
from kflow.cli.main import main
from kflow.graph import compile_flow

ROOT = Path(__file__).parents[2]
ORDER = ROOT / "examples" / "order-workflow.yaml"
BAD = """apiVersion: kflow.dev/v1alpha1
kind: Flow
metadata: {name: bad-orders, namespace: shop}
spec:
  nodes:
  - {name: load, queue: q, children: [transfrom]}
  - {name: transform, queue: q}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_lint_searches_directories_for_yaml_and_yml(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "order.yml").write_text(ORDER.read_text())
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "notes.txt").write_text("not: [a flow")
    code, out, err = run(capsys, "lint", str(tmp_path))
    assert code == 1
    assert "order.yml: Flow default/order-a17: ok (8 nodes, 8 queues)" in out
    assert f'{tmp_path / "bad.yaml"}: Flow shop/bad-orders: node "load" lists child ' \
           '"transfrom"' in err
    assert "notes.txt" not in out + err


def test_lint_of_an_empty_directory_fails_naming_it(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "lint", str(tmp_path))
    assert code == 1 and f"{tmp_path}: no *.yaml or *.yml file found" in err


def test_lint_reads_stdin(monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(ORDER.read_text()))
    code, out, _ = run(capsys, "lint", "-")
    assert code == 0 and "<stdin>: Flow default/order-a17: ok (8 nodes" in out
    monkeypatch.setattr("sys.stdin", io.StringIO(BAD))
    code, _, err = run(capsys, "lint", "-")
    assert code == 1 and '<stdin>: Flow shop/bad-orders: node "load"' in err


def test_lint_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "lint")
    assert code == EXIT_USAGE and "Missing argument" in err


def mermaid_edges(text: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    labels = dict(re.findall(r'^\s+(n\d+)\["([^"]*)"\]$', text, re.M))
    edges = set(re.findall(r"^\s+(n\d+) --> (n\d+)$", text, re.M))
    return labels, edges


def test_graph_of_a_local_file_as_mermaid_has_every_node_and_edge_child_to_parent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "graph", str(ORDER), "--format", "mermaid")
    assert code == 0 and out.startswith("flowchart BT\n")
    labels, edges = mermaid_edges(out)
    by_name = {label.split(" [")[0]: node for node, label in labels.items()}
    assert len(by_name) == 8 and labels[by_name["process-payment"]] == \
        "process-payment [payment]"
    parents_of_payment = {to for frm, to in edges if frm == by_name["process-payment"]}
    assert len(parents_of_payment) == 2  # the diamond: one child, two parents
    compiled = compile_flow(next(o for o in load_manifests(ORDER) if isinstance(o, Flow)))
    assert len(edges) == sum(len(node.children) for node in compiled.nodes.values())


def test_graph_of_a_local_file_as_dot_escapes_names_and_matches_mermaid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    flow = tmp_path / "q.yaml"
    flow.write_text('apiVersion: kflow.dev/v1alpha1\nkind: Flow\nmetadata: {name: q}\nspec:\n'
                    '  nodes:\n  - {name: top, queue: q, children: [a, b]}\n'
                    '  - {name: a, queue: q}\n  - {name: b, queue: q, children: [a]}\n')
    code, out, _ = run(capsys, "graph", str(flow), "--format", "dot")
    assert code == 0
    assert out.startswith('digraph "Flow default/q" {') and out.rstrip().endswith("}")
    labels = dict(re.findall(r'^\s+(n\d+) \[label="([^"]*)"', out, re.M))
    names = {label.split(" [")[0]: node for node, label in labels.items()}
    edges = set(re.findall(r"^\s+(n\d+) -> (n\d+);$", out, re.M))
    assert edges == {(names["a"], names["top"]), (names["b"], names["top"]),
                     (names["a"], names["b"])}


def test_graph_of_a_file_with_an_invalid_flow_exits_2(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, _, err = run(capsys, "graph", str(bad))
    assert code == EXIT_USAGE and '"transfrom"' in err and err.startswith("error: ")


def kubeconfig(tmp_path: Path, user: dict[str, object], namespace: str | None = None) -> str:
    context: dict[str, object] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "ctx", "context": context}],
        "users": [{"name": "u", "user": user}],
    }))
    return str(path)


def test_a_token_user_s_token_goes_to_the_api_and_the_context_namespace_is_the_default(
    tmp_path: Path,
) -> None:
    conn = load_connection(kubeconfig(tmp_path, {"token": "abc"}, namespace="etl"))
    assert (conn.token, conn.hop_token, conn.namespace, conn.context) == ("abc", "abc", "etl",
                                                                          "ctx")
    api = KflowApi(conn, ApiLocation.parse(None))
    assert api.headers()["X-Kflow-Token"] == "abc"
    assert api.headers()["Authorization"] == "Bearer abc"
    assert api.url("/api/v1/namespaces/etl/flows", {"limit": 5, "continue": None}) == (
        "https://127.0.0.1:1/api/v1/namespaces/kflow-system/services/http:kflow-api:http/"
        "proxy/api/v1/namespaces/etl/flows?limit=5")
    other = load_connection(kubeconfig(tmp_path, {"token": "abc"}), namespace="b", token="xyz")
    assert (other.token, other.hop_token, other.namespace) == ("xyz", "abc", "b")


def test_a_client_certificate_user_without_token_is_told_what_to_do(tmp_path: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.delenv("KFLOW_TOKEN", raising=False)
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    conn = load_connection(kubeconfig(tmp_path, {"client-certificate-data": pem.decode(),
                                                 "client-key-data": pem.decode()}))
    assert conn.token is None and conn.cert_file
    with pytest.raises(CliError) as caught:
        KflowApi(conn, ApiLocation.parse(None))
    assert caught.value.exit_code == EXIT_DENIED
    assert "client certificate" in str(caught.value)
    assert "--token $(kubectl create token" in str(caught.value)
    monkeypatch.setenv("KFLOW_TOKEN", "from-env")
    conn = load_connection(kubeconfig(tmp_path, {"client-certificate-data": pem.decode(),
                                                 "client-key-data": pem.decode()}))
    assert conn.token == "from-env" and KflowApi(conn, ApiLocation.parse(None)).headers()[
        "X-Kflow-Token"] == "from-env"


def test_an_unknown_context_names_the_ones_there_are(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"--context nope: .*\(it has: ctx\)") as caught:
        load_connection(kubeconfig(tmp_path, {"token": "t"}), context="nope")
    assert caught.value.exit_code == EXIT_USAGE


def test_api_location_is_namespace_slash_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFLOW_API", raising=False)
    assert str(ApiLocation.parse(None)) == "kflow-system/kflow-api"
    monkeypatch.setenv("KFLOW_API", "ops/flows-api")
    assert ApiLocation.parse(None) == ApiLocation("ops", "flows-api")
    assert ApiLocation.parse("a/b") == ApiLocation("a", "b")
    with pytest.raises(CliError, match="expected NAMESPACE/SERVICE") as caught:
        ApiLocation.parse("just-a-name")
    assert caught.value.exit_code == EXIT_USAGE


def api() -> KflowApi:
    return KflowApi(Connection(host="https://h", namespace="a", context="ctx", user="u",
                               token="t"), ApiLocation("kflow-system", "kflow-api"))


@pytest.mark.parametrize(("status", "body", "code", "fragment"), [
    (403, b'{"error": "user jane may not patch flows.kflow.dev in namespace a", '
          b'"reason": "Forbidden", "code": 403}', EXIT_DENIED, "may not patch flows.kflow.dev"),
    (401, b'{"error": "no token", "reason": "Unauthorized", "code": 401}', EXIT_DENIED,
     "no token"),
    (404, b'{"error": "flow a/x not found", "reason": "NotFound", "code": 404}',
     EXIT_NOT_FOUND, "flow a/x not found"),
    (409, b'{"error": "flow a/x has ended", "reason": "Conflict", "code": 409}', EXIT_ERROR,
     "has ended"),
    # The API server's own answers on the proxy hop (Status objects), made clear.
    (404, b'{"kind": "Status", "message": "services \\"kflow-api\\" not found", '
          b'"reason": "NotFound", "code": 404}', EXIT_NOT_FOUND, "--api NAMESPACE/SERVICE"),
    (403, b'{"kind": "Status", "message": "services \\"http:kflow-api:http\\" is forbidden",'
          b' "code": 403}', EXIT_DENIED, "server.proxyAccess"),
    (503, b'{"kind": "Status", "message": "no endpoints available for service", '
          b'"code": 503}', EXIT_ERROR, "is its pod ready"),
])
def test_error_answers_are_one_line_with_a_distinct_exit_code(
    status: int, body: bytes, code: int, fragment: str
) -> None:
    error = api()._error(status, body)
    assert error.exit_code == code and fragment in str(error) and "\n" not in str(error)


def test_a_cli_error_prints_one_line_and_its_exit_code(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch) -> None:
    monkeypatch.delenv("KFLOW_TOKEN", raising=False)
    pem = base64.b64encode(b"x").decode()
    config = kubeconfig(tmp_path, {"client-certificate-data": pem, "client-key-data": pem})
    code, out, err = run(capsys, "get", "some-flow", "--kubeconfig", config)
    assert code == EXIT_DENIED and out == ""
    assert err.startswith("error: kubeconfig user 'u' (context 'ctx') signs in with a client "
                          "certificate") and err.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "get")[0] == EXIT_USAGE
    assert run(capsys, "list", "-o", "xml")[0] == EXIT_USAGE
    code, _, err = run(capsys, "logs", "f", "--attempt", "2")
    assert code == EXIT_USAGE and "--attempt needs a NODE" in err
    code, _, err = run(capsys, "nonsense")
    assert code == EXIT_USAGE and "No such command" in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    import kflow

    assert run(capsys, "--version") == (0, f"kflow {kflow.__version__}\n", "")
    assert run(capsys, "version") == (0, f"kflow {kflow.__version__}\n", "")
    code, out, _ = run(capsys, "submit", "--help")
    assert code == 0 and "FlowTemplate is not available yet" in " ".join(out.split())
    for command in ("get", "list", "watch", "wait", "logs", "retry", "cancel", "suspend",
                    "resume", "delete", "lint", "graph", "ui", "completion", "run", "worker",
                    "operator", "server"):
        assert re.search(rf"^\s+{command}\s", run(capsys, "--help")[1], re.M), command


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_call_back_into_kflow(shell: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0 and "_KFLOW_COMPLETE" in out and "kflow" in out


def test_kubectl_completion_follows_cobra_s_protocol(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from kflow.cli.main import kubectl_complete

    monkeypatch.setattr("sys.argv", ["kubectl_complete-kflow", "__complete", "re"])
    assert kubectl_complete() == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines[:-1]] == ["resume", "retry"]
    assert lines[-1] == ":4"
    monkeypatch.setattr("sys.argv", ["kubectl_complete-kflow", "__complete", "get", "--st"])
    assert kubectl_complete() == 0
    assert capsys.readouterr().out.splitlines()[0].split("\t")[0] == "--state"


def test_server_and_worker_pass_every_argument_to_their_own_parsers(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["server", "--help"])
    assert done.value.code == 0 and "usage: kflow server" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["worker", "--help"])
    assert done.value.code == 0 and "--queue" in capsys.readouterr().out
