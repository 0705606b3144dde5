"""The `kflow` command (also `kubectl kflow`): run a flow locally, lint flow files, submit and
steer flows on a cluster through the kflow API, run the operator, the API server or a worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

import kflow
from kflow.cli.client import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ApiLocation,
    CliError,
    KflowApi,
    load_connection,
)
from kflow.cli.lint import (
    ANNOTATIONS_LIMIT,
    ETCD_REQUEST_LIMIT,
    EXIT_LINT_ERRORS,
    LAST_APPLIED,
    lint_files,
    size_problems,
)

__all__ = ["ANNOTATIONS_LIMIT", "ETCD_REQUEST_LIMIT", "EXIT_LINT_ERRORS", "LAST_APPLIED",
           "cli", "lint_files", "main", "size_problems"]

F = TypeVar("F", bound=Callable[..., Any])
OUTPUTS = click.Choice(["json", "yaml"])
PHASES = ["Pending", "Running", "Succeeded", "Failed", "Cancelled", "Suspended"]
STATES = ["waiting-children", "ready", "active", "delayed", "completed", "failed", "ignored",
          "removed", "cancelled"]
EXIT_CODES = """Exit codes: 0 done (a flow waited for Succeeded); 1 the flow Failed or was
Cancelled, or lint found errors; 2 bad arguments or an invalid file; 3 the API or cluster
answered an error or could not be reached; 4 denied (401/403); 5 not found; 6 timed out."""


def _prog_name() -> str:
    return "kubectl kflow" if Path(sys.argv[0]).name == "kubectl-kflow" else "kflow"


class Target:
    """The cluster options of a command, turned into an API client on first use."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None,
                 api: str | None, token: str | None, api_url: str | None = None) -> None:
        self.kubeconfig, self.context, self.explicit_namespace = kubeconfig, context, namespace
        self.api_location, self.token, self.api_url = api, token, api_url
        self._api: KflowApi | None = None
        self._connection: Any = None

    @property
    def connection(self) -> Any:
        if self._connection is None:
            self._connection = load_connection(self.kubeconfig, self.context,
                                               self.explicit_namespace, self.token)
        return self._connection

    @property
    def namespace(self) -> str:
        return str(self.connection.namespace)

    @property
    def api(self) -> KflowApi:
        if self._api is None:
            self._api = KflowApi(self.connection, ApiLocation.parse(self.api_location),
                                 direct_url=self.api_url)
        return self._api


def cluster_options(func: F) -> F:
    """--kubeconfig, --context, -n, --api, --token: where the flows are and who asks."""

    @click.option("--kubeconfig", metavar="FILE", envvar="KUBECONFIG",
                  help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    @click.option("--context", metavar="NAME", help="kubeconfig context (default: current)")
    @click.option("-n", "--namespace", metavar="NS",
                  help="namespace of the flows (default: the context's, else default)")
    @click.option("--api", "api_location", metavar="NAMESPACE/SERVICE",
                  help="the kflow API Service, reached through the API server's service proxy "
                       "(default: $KFLOW_API, else kflow-system/kflow-api)")
    @click.option("--api-url", metavar="URL", envvar="KFLOW_API_URL",
                  help="reach the kflow API at this URL directly (a port-forward, or from a "
                       "pod) instead of through the service proxy ($KFLOW_API_URL)")
    @click.option("--token", metavar="TOKEN",
                  help="your bearer token for the kflow API (default: $KFLOW_TOKEN, else the "
                       "kubeconfig user's token, tokenFile or exec plugin)")
    @wraps(func)
    def wrapper(*args: Any, kubeconfig: str | None, context: str | None,
                namespace: str | None, api_location: str | None, api_url: str | None,
                token: str | None, **kwargs: Any) -> Any:
        # KUBECONFIG may list several files; the kubernetes loader merges them itself.
        if kubeconfig and os.pathsep in kubeconfig:
            kubeconfig = None
        target = Target(kubeconfig, context, namespace, api_location, token, api_url)
        return func(*args, target=target, **kwargs)

    return wrapper  # type: ignore[return-value]


def complete_flow(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Flow names for shell completion, asked of the API (nothing when it cannot answer)."""
    try:
        params = ctx.params
        target = Target(params.get("kubeconfig"), params.get("context"),
                        params.get("namespace"), params.get("api_location"),
                        params.get("token"))
        target._api = KflowApi(target.connection, ApiLocation.parse(target.api_location),
                               timeout=3, direct_url=params.get("api_url"))
        page = target.api.list_flows(target.namespace, q=incomplete or None, limit=200)
        return [str(f["name"]) for f in page.get("items") or []
                if str(f["name"]).startswith(incomplete)]
    except Exception:
        return []


def console(err: bool = False) -> Any:
    from rich.console import Console

    out = Console(stderr=err, highlight=False, soft_wrap=True)
    if not out.is_terminal:  # a pipe or a file: tables as wide as their content
        out.width = 400
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES)
@click.version_option(kflow.__version__, "--version", prog_name="kflow",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """kflow: DAGs of jobs on Kubernetes, state in Redis.

    Cluster commands reach the kflow API through the API server's service proxy with your
    kubeconfig, and act as you: the API allows what RBAC on flows.kflow.dev allows you.
    """


@cli.command(context_settings={"ignore_unknown_options": True}, add_help_option=False,
             short_help="Serve one queue as a long-lived worker.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker(args: tuple[str, ...]) -> int:
    """Serve one queue as a long-lived worker (see `kflow worker --help`)."""
    from kflow.sdk.worker import main as worker_main

    return worker_main(list(args))


@cli.command(context_settings={"ignore_unknown_options": True}, add_help_option=False,
             short_help="Run the kflow API server.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def server(args: tuple[str, ...]) -> int:
    """Run the kflow API server (see `kflow server --help`)."""
    from kflow.server.main import run_server  # type: ignore[import-not-found,unused-ignore]

    return int(run_server(list(args)))


@cli.command(short_help="Run the Kubernetes operator.")
@click.option("--verbose", "-v", is_flag=True, help="debug logging")
def operator(verbose: bool) -> int:
    """Run the Kubernetes operator (configured by KFLOW_* environment variables)."""
    from kflow.kube.main import run_operator

    return run_operator(verbose=verbose)


@cli.command()
def version() -> int:
    """Print the kflow version."""
    click.echo(f"kflow {kflow.__version__}")
    return EXIT_OK


@cli.command(short_help="Run a Flow here (--local), handlers in-process.")
@click.argument("flow", metavar="FLOW.yaml")
@click.option("--local", is_flag=True,
              help="run here, without Kubernetes (the only mode of `kflow run` for now)")
@click.option("--handlers", required=True, metavar="FILE.py|MODULE",
              help="Python file or module registering a handler per queue")
@click.option("--redis", metavar="URL",
              help="use this Redis (and keep the state there, so a rerun resumes); default: a "
                   "private redis-server, stopped at exit")
@click.option("--flow-id", metavar="ID",
              help="flow uid in Redis; default: derived from the flow's namespace/name")
@click.option("--quiet", "-q", is_flag=True, help="print only the final tree")
def run(flow: str, local: bool, handlers: str, redis: str | None, flow_id: str | None,
        quiet: bool) -> int:
    """Run a Flow. With --local the whole flow runs in this process: each ready node calls
    the handler registered for its queue. Exit 0 when the flow succeeds, 1 when it fails, 2
    when the file or the handlers are invalid (nothing is written then)."""
    if not local:
        raise click.UsageError("kflow run needs --local (a flow on a cluster is started with "
                               "`kflow submit FILE`)")
    from kflow.cli.local.command import run_local_command

    return run_local_command(flow, handlers, redis_url=redis, flow_id=flow_id, quiet=quiet)


@cli.command(short_help="Check Flow and Queue files (dirs, - for stdin).")
@click.argument("paths", nargs=-1, required=True, metavar="FILE|DIR|-...")
def lint(paths: tuple[str, ...]) -> int:
    """Check Flow and Queue files: parse and compile every Flow as the admission webhook does.
    A directory is searched for *.yaml and *.yml files; `-` reads standard input. Exit 1 if
    any object has an error."""
    return lint_files(list(paths), sys.stdout, sys.stderr)


@cli.command(short_help="Lint and create Flows as you; --wait, --watch.")
@click.argument("paths", nargs=-1, required=True, metavar="FILE|DIR|-...")
@cluster_options
@click.option("--wait", "wait_", is_flag=True,
              help="wait until the flow(s) end; exit 0 if all succeeded, 1 if not")
@click.option("--watch", "watch_", is_flag=True, help="show the live tree until the flow ends")
@click.option("--timeout", type=float, metavar="SECONDS", help="with --wait: give up after")
@click.option("-o", "--output", type=OUTPUTS, help="print the created Flows as JSON or YAML")
def submit(paths: tuple[str, ...], target: Target, wait_: bool, watch_: bool,
           timeout: float | None, output: str | None) -> int:
    """Create the Flows (and the Queues, unless they exist) of files, directories or `-`
    with your own Kubernetes credentials, after the checks of `kflow lint`. A Flow with
    metadata.generateName gets its name from the API server; the name is printed.

    Submitting from a FlowTemplate is not available yet (FlowTemplate is issue 13)."""
    from kflow.cli import cluster
    from kflow.cli.lint import check_source, manifest_paths

    manifests: list[dict[str, Any]] = []
    failed = False
    for path in manifest_paths(list(paths)):
        checked = check_source(path, sys.stdout, sys.stderr, verbose=False)
        failed = failed or checked.failed
        manifests.extend(checked.manifests)
    if failed:
        raise CliError("nothing submitted: fix the problems above (`kflow lint` shows them)",
                       EXIT_USAGE)
    if not any(m.get("kind") == "Flow" for m in manifests):
        raise CliError(f"{', '.join(paths)}: no Flow to submit", EXIT_USAGE)
    say = (lambda line: click.echo(line, err=True)) if output else click.echo
    flows = cluster.create_objects(target.connection, manifests, target.namespace,
                                   target.explicit_namespace is not None, say)
    if output:
        cluster.emit(flows if len(flows) > 1 else flows[0], output, sys.stdout)
    if watch_:
        if len(flows) != 1:
            raise CliError("--watch follows one Flow; use --wait for several", EXIT_USAGE)
        meta = flows[0]["metadata"]
        return cluster.watch(target.api, console(), meta["namespace"], meta["name"])
    if wait_:
        code = EXIT_OK
        for flow in flows:
            meta = flow["metadata"]
            result, summary = cluster.wait_for(target.api, meta["namespace"], meta["name"],
                                               target=None, timeout=timeout)
            click.echo(f"Flow {meta['namespace']}/{meta['name']}: {summary.get('phase')}",
                       err=bool(output))
            code = max(code, result)
        return code
    return EXIT_OK


@cli.command(name="list", short_help="List a namespace's flows (-A: every namespace).")
@cluster_options
@click.option("--phase", type=click.Choice(PHASES), help="only flows in this phase")
@click.option("-q", "--search", metavar="TEXT", help="only flows whose name holds TEXT")
@click.option("--limit", type=int, default=500, show_default=True, help="at most this many")
@click.option("-A", "--all-namespaces", is_flag=True,
              help="flows of every namespace, from the Kubernetes API (needs `list` on flows "
                   "in all namespaces)")
@click.option("-o", "--output", type=OUTPUTS, help="the API's FlowSummary items")
def list_(target: Target, phase: str | None, search: str | None, limit: int,
          all_namespaces: bool, output: str | None) -> int:
    """List the flows of a namespace: phase, nodes done, failed, age and duration."""
    from kflow.cli import cluster

    if all_namespaces:
        items = cluster.list_all_namespaces(target.connection, phase=phase, q=search,
                                            at_most=limit)
    else:
        items = cluster.list_flows(target.api, target.namespace, phase=phase, q=search,
                                   at_most=limit)
    if output:
        cluster.emit({"items": items}, output, sys.stdout)
    elif not items:
        where = "any namespace" if all_namespaces else f"namespace {target.namespace}"
        click.echo(f"No flows in {where}.", err=True)
    else:
        console().print(cluster.flows_table(items, all_namespaces=all_namespaces))
    return EXIT_OK


@cli.command(short_help="Show a flow's summary and tree, or one node.")
@click.argument("flow", shell_complete=complete_flow)
@click.argument("node", required=False)
@cluster_options
@click.option("--state", type=click.Choice(STATES),
              help="list the flow's nodes in this state instead of the tree")
@click.option("--limit", type=int, default=500, show_default=True,
              help="with --state: at most this many nodes")
@click.option("-o", "--output", type=OUTPUTS,
              help="the API's summary (with `nodes` when --state is given), or NODE's detail")
def get(flow: str, node: str | None, target: Target, state: str | None, limit: int,
        output: str | None) -> int:
    """Show a flow: phase, node counts, times, duration, first failures, and its tree of
    nodes with results (up to 2,000 nodes; a larger flow shows its unfinished nodes). With
    NODE: that node's inputs, result, error, parents, children and attempts."""
    from kflow.cli import cluster

    api, namespace = target.api, target.namespace
    if node is not None:
        detail = api.node(namespace, flow, node)
        if output:
            cluster.emit(detail, output, sys.stdout)
        else:
            console().print(cluster.node_detail(detail, f"{namespace}/{flow}"))
        return EXIT_OK
    if state is not None:
        nodes = cluster.nodes_listing(api, namespace, flow, state, limit)
        if output:
            cluster.emit({"summary": api.flow(namespace, flow), "nodes": nodes}, output,
                         sys.stdout)
        else:
            console().print(cluster.node_table(nodes))
        return EXIT_OK
    if output:
        cluster.emit(api.flow(namespace, flow), output, sys.stdout)
        return EXIT_OK
    cluster.print_get(console(), cluster.load_view(api, namespace, flow))
    return EXIT_OK


@cli.command(short_help="Follow a flow live until it ends.")
@click.argument("flow", shell_complete=complete_flow)
@cluster_options
def watch(flow: str, target: Target) -> int:
    """Follow a flow live (its event stream) until it ends: the tree redrawn on a terminal,
    one line per change elsewhere. Exit 0 if it succeeds, 1 if it fails or is cancelled."""
    from kflow.cli import cluster

    return cluster.watch(target.api, console(), target.namespace, flow)


@cli.command(short_help="Wait for a flow to end or reach a phase.")
@click.argument("flow", shell_complete=complete_flow)
@cluster_options
@click.option("--for", "for_", type=click.Choice(PHASES), metavar="PHASE",
              help="wait for this phase (default: any final phase; exit 0 only if Succeeded)")
@click.option("--timeout", type=float, metavar="SECONDS", help="give up after (exit 6)")
@click.option("-o", "--output", type=OUTPUTS, help="print the final summary as JSON or YAML")
def wait(flow: str, target: Target, for_: str | None, timeout: float | None,
         output: str | None) -> int:
    """Wait for a flow to end (or to reach --for PHASE)."""
    from kflow.cli import cluster

    code, summary = cluster.wait_for(target.api, target.namespace, flow, target=for_,
                                     timeout=timeout)
    if output:
        cluster.emit(summary, output, sys.stdout)
    elif code == EXIT_TIMEOUT:
        click.echo(f"Flow {target.namespace}/{flow}: still {summary.get('phase')} after "
                   f"{timeout:g} s", err=True)
    else:
        click.echo(f"Flow {target.namespace}/{flow}: {summary.get('phase')}")
    return code


@cli.command(short_help="Print a flow's or a node's kept logs (-f).")
@click.argument("flow", shell_complete=complete_flow)
@click.argument("node", required=False)
@cluster_options
@click.option("-f", "--follow", is_flag=True, help="print new lines until the flow ends")
@click.option("--attempt", type=int, metavar="N", help="only this attempt of the node")
def logs(flow: str, node: str | None, target: Target, follow: bool,
         attempt: int | None) -> int:
    """Print the logs kept of a flow's nodes (each attempt's container log tail and job.log
    lines), or of one NODE; lines of all nodes are prefixed `NODE[ATTEMPT]`."""
    from kflow.cli import cluster

    if attempt is not None and node is None:
        raise click.UsageError("--attempt needs a NODE")
    return cluster.follow_logs(target.api, sys.stdout, target.namespace, flow, node=node,
                               attempt=attempt, follow=follow)


def _action(verb: str, help_text: str) -> None:
    @cli.command(name=verb, help=help_text, short_help=help_text.split(" (")[0] + ".")
    @click.argument("flow", shell_complete=complete_flow)
    @cluster_options
    @click.option("-o", "--output", type=OUTPUTS, help="print the summary as JSON or YAML")
    @click.option("--wait", "wait_", is_flag=True, hidden=verb in ("cancel", "suspend"),
                  help="then wait until the flow ends; exit 0 if it succeeds, 1 if not")
    @click.option("--timeout", type=float, metavar="SECONDS", hidden=verb in ("cancel",
                  "suspend"), help="with --wait: give up after (exit 6)")
    def command(flow: str, target: Target, output: str | None, wait_: bool,
                timeout: float | None) -> int:
        from kflow.cli import cluster

        before = target.api.flow(target.namespace, flow) if wait_ and verb == "retry" else {}
        summary = target.api.action(target.namespace, flow, verb)
        if not wait_:
            if output:
                cluster.emit(summary, output, sys.stdout)
            else:
                click.echo(f"Flow {target.namespace}/{flow}: {cluster.ACTION_WORDS[verb]} "
                           f"(phase {summary.get('phase')})")
            return EXIT_OK
        click.echo(f"Flow {target.namespace}/{flow}: {cluster.ACTION_WORDS[verb]}",
                   err=bool(output))
        if verb == "retry":
            code, final = cluster.wait_for_retry(target.api, target.namespace, flow, before,
                                                 timeout=timeout)
        else:
            code, final = cluster.wait_for(target.api, target.namespace, flow, target=None,
                                           timeout=timeout)
        if output:
            cluster.emit(final, output, sys.stdout)
        else:
            click.echo(f"Flow {target.namespace}/{flow}: {final.get('phase')}")
        return code


_action("retry", "Run a flow's failed nodes again (needs `patch` on flows).")
_action("cancel", "Cancel a flow, for good (needs `patch` on flows): no node starts any more, "
                  "running ones are stopped.")
_action("suspend", "Suspend a flow (needs `patch` on flows): no new node starts until it is "
                   "resumed.")
_action("resume", "Resume a suspended flow (needs `patch` on flows).")


@cli.command(short_help="Delete a flow (needs `delete` on flows).")
@click.argument("flow", shell_complete=complete_flow)
@cluster_options
def delete(flow: str, target: Target) -> int:
    """Delete a flow, its Jobs and its state (needs `delete` on flows)."""
    target.api.delete(target.namespace, flow)
    click.echo(f"Flow {target.namespace}/{flow} deleted")
    return EXIT_OK


@cli.command(short_help="Print a flow's DAG as Mermaid or DOT.")
@click.argument("source", metavar="FLOW|FILE|-", shell_complete=complete_flow)
@cluster_options
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid",
              show_default=True)
@click.option("--collapse", type=int, default=20, show_default=True,
              help="a cluster flow's siblings that share parents, children and queue are one "
                   "box past this many (0: never)")
def graph(source: str, target: Target, fmt: str, collapse: int) -> int:
    """Print a flow's DAG as Mermaid or Graphviz DOT. A file (or `-`) is compiled here; a
    name is a cluster flow, drawn with its node states. Edges point from child to parent."""
    from kflow.cli import cluster, render

    if source == "-" or Path(source).is_file():
        ref, compiled = cluster.graph_of_file(source)
        nodes, edges = render.graph_of_compiled(compiled)
    else:
        ref = f"Flow {target.namespace}/{source}"
        nodes, edges = render.graph_of_api(target.api.graph(target.namespace, source,
                                                             collapse=collapse))
    text = render.to_mermaid(nodes, edges) if fmt == "mermaid" else render.to_dot(
        nodes, edges, name=ref)
    sys.stdout.write(text)
    return EXIT_OK


@cli.command(short_help="Serve the web view on 127.0.0.1, as you.")
@cluster_options
@click.option("--port", type=int, default=8001, show_default=True,
              help="local port (0: any free one)")
@click.option("--address", default="127.0.0.1", show_default=True, help="local address")
def ui(target: Target, port: int, address: str) -> int:
    """Serve the web view on this machine: every request is forwarded to the kflow API
    through the API server's service proxy, as you (your kubeconfig and token)."""
    from kflow.cli.ui import serve_ui

    return serve_ui(target.api, address, port, target.namespace)


@cli.command(short_help="Print who the kflow API takes you for.")
@cluster_options
def whoami(target: Target) -> int:
    """Print who the kflow API takes you for (username and groups)."""
    me = target.api.whoami()
    click.echo(f"{me.get('username')} (groups: {', '.join(me.get('groups') or [])})")
    return EXIT_OK


@cli.command(short_help="Print a bash, zsh or fish completion script.")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> int:
    """Print the shell completion script: `source <(kflow completion bash)`; for `kubectl
    kflow` (kubectl ≥ 1.26), put kubectl_complete-kflow on PATH (pip installs it)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    sys.stdout.write(cls(cli, {}, "kflow", "_KFLOW_COMPLETE").source() + "\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["worker"]:  # the worker's own parser takes every argument, --help too
        from kflow.sdk.worker import main as worker_main

        return worker_main(args[1:])
    if args[:1] == ["server"]:
        return int(server.callback(tuple(args[1:])))  # type: ignore[misc]
    try:
        result = cli.main(args=args, prog_name=_prog_name(), standalone_mode=False,
                          complete_var="_KFLOW_COMPLETE")
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except CliError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:  # `kflow get … | head`
        sys.stderr.close()
        return EXIT_OK
    return int(result) if isinstance(result, int) else EXIT_ERROR if result else EXIT_OK


def kubectl_complete() -> int:
    """`kubectl_complete-kflow`: kubectl (≥ 1.26) runs it to complete `kubectl kflow …`,
    with cobra's protocol: `__complete ARGS… INCOMPLETE` in, one candidate per line and a
    `:DIRECTIVE` line out."""
    from click.shell_completion import ShellComplete

    args = sys.argv[1:]
    if args[:1] in (["__complete"], ["__completeNoDesc"]):
        args = args[1:]
    incomplete = args[-1] if args else ""
    completer = ShellComplete(cli, {}, "kubectl kflow", "_KFLOW_COMPLETE")
    items = completer.get_completions(args[:-1], incomplete)
    for item in items:
        sys.stdout.write(f"{item.value}\t{item.help}\n" if item.help else f"{item.value}\n")
    # 4: no file completion, unless nothing matched (then the shell may offer files).
    sys.stdout.write(":4\n" if items else ":0\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
