"""The `kflow` command: run a flow locally, lint flow files, run the operator or a worker."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import kflow

if TYPE_CHECKING:
    from kflow.api import Flow

EXIT_LINT_ERRORS = 1

# How large a Flow may be in Kubernetes, measured on v1.33 with etcd's defaults (README, Limits).
# `kubectl apply` copies the whole object into one annotation, and an object's annotations
# may hold 256 KiB in all; etcd stores no request over 1.5 MiB (--max-request-bytes).
ANNOTATIONS_LIMIT = 256 * 1024
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ETCD_REQUEST_LIMIT = 1536 * 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kflow",
        description="kflow: DAGs of jobs on Kubernetes, state in Redis.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run",
        help="run a Flow",
        description=(
            "Run a Flow. With --local the whole flow runs in this process: each ready node "
            "calls the handler registered for its queue. Exit 0 when the flow succeeds, 1 when "
            "it fails, 2 when the file or the handlers are invalid (nothing is written then)."
        ),
    )
    run.add_argument("flow", metavar="FLOW.yaml",
                     help="YAML file with one Flow and the Queue objects it uses")
    run.add_argument("--local", action="store_true", required=True,
                     help="run here, without Kubernetes (the only mode of `kflow run` for now)")
    run.add_argument("--handlers", required=True, metavar="FILE.py|MODULE",
                     help="Python file or module registering a handler per queue")
    run.add_argument("--redis", metavar="URL",
                     help="use this Redis (and keep the state there, so a rerun resumes); "
                          "default: a private redis-server, stopped at exit")
    run.add_argument("--flow-id", metavar="ID",
                     help="flow uid in Redis; default: derived from the flow's namespace/name")
    run.add_argument("--quiet", "-q", action="store_true",
                     help="print only the final tree")

    lint = commands.add_parser(
        "lint",
        help="check Flow and Queue files",
        description="Parse and compile every Flow in the files; exit 1 if any has an error.",
    )
    lint.add_argument("files", nargs="+", metavar="FILE.yaml")

    operator = commands.add_parser(
        "operator",
        help="run the Kubernetes operator (configured by KFLOW_* environment variables)",
        description="Run the kopf operator that turns Flows into Jobs; settings come from "
                    "KFLOW_* variables (see kflow.settings).",
    )
    operator.add_argument("--verbose", "-v", action="store_true", help="debug logging")

    # The worker has its own parser (kflow.sdk.worker); listed here for `kflow --help`.
    commands.add_parser("worker", add_help=False,
                        help="serve one queue as a long-lived worker (see `kflow worker --help`)")

    commands.add_parser("version", help="print the kflow version")
    return parser


def lint_files(paths: Sequence[str], out: IO[str], err: IO[str]) -> int:
    """Give every object of every file the verdict the admission webhook gives it; print one
    line per object or problem."""
    from kflow.api import Flow
    from kflow.api.errors import SpecError, error_lines
    from kflow.api.manifests import document_source, read_documents
    from kflow.graph import check_manifest

    def report(exc: SpecError, path: str) -> None:
        for line in error_lines(exc):
            # A problem of the file itself is already named by its path.
            err.write(f"{line}\n" if line.startswith(f"{path}: ") else f"{path}: {line}\n")

    failed = False
    for path in paths:
        try:
            documents, name = read_documents(Path(path))
        except SpecError as exc:
            report(exc, path)
            failed = True
            continue
        except OSError as exc:
            err.write(f"{path}: cannot read: {exc}\n")
            failed = True
            continue
        if not documents:
            err.write(f"{path}: holds no Flow or Queue object\n")
            failed = True
        for position, document in enumerate(documents, start=1):
            try:
                verdict = check_manifest(document, source=document_source(name, position))
            except SpecError as exc:
                report(exc, path)
                failed = True
                continue
            label = verdict.obj.object_ref
            if isinstance(verdict.obj, Flow):
                warnings, errors = size_problems(verdict.obj, path)
                for line in (*warnings, *errors):
                    err.write(f"{path}: {line}\n")
                if errors:
                    failed = True
                    continue
            if verdict.compiled is None:
                out.write(f"{path}: {label}: ok\n")
            else:
                out.write(f"{path}: {label}: ok ({len(verdict.compiled.nodes)} nodes, "
                          f"{len(verdict.compiled.queues)} queues)\n")
    return EXIT_LINT_ERRORS if failed else 0


def _kib(size: int) -> str:
    return f"{size / 1024:,.0f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MiB"


def size_problems(flow: Flow, path: str) -> tuple[list[str], list[str]]:
    """(warnings, errors) about submitting `flow` to Kubernetes, judged by its size as JSON."""
    manifest = flow.model_dump(mode="json", by_alias=True, exclude_unset=True)
    size = len(json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode())
    if size > ETCD_REQUEST_LIMIT:
        return [], [
            f"{flow.object_ref}: is {_kib(size)} as JSON, over the {_kib(ETCD_REQUEST_LIMIT)} "
            "etcd stores per object, so no kubectl command can submit it (etcdserver: request "
            "is too large); split it into several Flows, or use fewer nodes or shorter names "
            "(kflow run --local has no such limit)"
        ]
    annotations = flow.metadata.annotations or {}
    others = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    # kubectl writes the object, less that annotation, as compact JSON plus a newline.
    if size + 1 + len(LAST_APPLIED) + others > ANNOTATIONS_LIMIT:
        return [
            f"{flow.object_ref}: warning: is {_kib(size)} as JSON, too large for `kubectl "
            f"apply`, which copies the whole object into its {LAST_APPLIED} annotation "
            f"(an object's annotations may hold {_kib(ANNOTATIONS_LIMIT)} in all); submit it "
            f"with `kubectl create -f {path}` (`kubectl apply --server-side` stores a list "
            "of every field beside the object and fails at about half of what etcd stores)"
        ], []
    return [], []


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        from kflow.sdk.worker import main as worker_main

        return worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "operator":
        from kflow.kube.main import run_operator

        return run_operator(verbose=args.verbose)
    if args.command == "version":
        print(f"kflow {kflow.__version__}")
        return 0
    if args.command == "lint":
        return lint_files(args.files, sys.stdout, sys.stderr)
    from kflow.cli.local.command import run_local_command

    return run_local_command(
        args.flow, args.handlers, redis_url=args.redis, flow_id=args.flow_id, quiet=args.quiet,
    )


if __name__ == "__main__":
    sys.exit(main())
