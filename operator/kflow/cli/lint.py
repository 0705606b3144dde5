"""`kflow lint` and the check `kflow submit` makes first: every object of every file gets the
verdict the admission webhook gives it, and a Flow too large for Kubernetes is named."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kflow.api import Flow
    from kflow.api.errors import SpecError
    from kflow.api.models import FlowTemplate

EXIT_LINT_ERRORS = 1
STDIN = "-"
MANIFEST_SUFFIXES = (".yaml", ".yml")

# How large a Flow may be in Kubernetes, measured on v1.33 with etcd's defaults (README, Limits).
# `kubectl apply` copies the whole object into one annotation, and an object's annotations
# may hold 256 KiB in all; etcd stores no request over 1.5 MiB (--max-request-bytes).
ANNOTATIONS_LIMIT = 256 * 1024
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ETCD_REQUEST_LIMIT = 1536 * 1024


def manifest_paths(paths: Sequence[str]) -> Iterator[str]:
    """The files to read: each file as given, each directory's *.yaml and *.yml files (all
    depths, sorted), `-` for standard input."""
    for path in paths:
        if path != STDIN and Path(path).is_dir():
            found = sorted(p for p in Path(path).rglob("*")
                           if p.suffix in MANIFEST_SUFFIXES and p.is_file())
            yield from (str(p) for p in found)
        else:
            yield path


@dataclass
class Checked:
    """The objects of one source that passed, as plain manifests, and whether any failed."""

    manifests: list[dict[str, Any]] = field(default_factory=list)
    failed: bool = False


def templates_of(documents: Sequence[Any]) -> dict[str, FlowTemplate]:
    """The FlowTemplates among `documents` that parse, by name (their problems are reported
    when they are checked themselves)."""
    from pydantic import ValidationError

    from kflow.api.models import FlowTemplate

    found: dict[str, FlowTemplate] = {}
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "FlowTemplate":
            try:
                template = FlowTemplate.model_validate(document)
            except ValidationError:
                continue
            if template.metadata.name:
                found[template.metadata.name] = template
    return found


def _template_name(document: Any) -> str | None:
    spec = document.get("spec") if isinstance(document, dict) else None
    reference = spec.get("templateRef") if isinstance(spec, dict) else None
    name = reference.get("name") if isinstance(reference, dict) else None
    return name if isinstance(name, str) else None


def _check_cronflow(document: dict[str, Any], label: str, out: IO[str], err: IO[str],
                    verbose: bool) -> bool:
    """A CronFlow gets the admission webhook's verdict (its schedule, time zone and Flow)."""
    from kflow.kube.cronflows import judge

    problem, parsed = judge(document)
    if problem is not None:
        for line in problem[1].splitlines():
            err.write(f"{label}: {line}\n")
        return False
    if verbose and parsed is not None:
        out.write(f"{label}: {parsed.object_ref}: ok (schedule {parsed.spec.schedule!r})\n")
    return True


def check_source(path: str, out: IO[str], err: IO[str], *, stdin: IO[str] | None = None,
                 verbose: bool = True,
                 templates: dict[str, FlowTemplate] | None = None) -> Checked:
    """Read `path` (or standard input for `-`) and check each object; print one line per
    object (when `verbose`) or problem, problems prefixed by the path. A Flow made from a
    FlowTemplate is checked against it when the template is in this source or `templates`
    (the other files checked with it)."""
    from kflow.api import Flow
    from kflow.api.errors import SpecError, error_lines
    from kflow.api.manifests import document_source, read_documents
    from kflow.graph import check_manifest

    label = "<stdin>" if path == STDIN else path

    def report(exc: SpecError) -> None:
        for line in error_lines(exc):
            # A problem of the file itself is already named by its path.
            err.write(f"{line}\n" if line.startswith(f"{label}: ") else f"{label}: {line}\n")

    checked = Checked()
    try:
        if path == STDIN:
            # A trailing newline keeps read_documents from taking a one-line text for a path.
            documents, name = read_documents((stdin or sys.stdin).read() + "\n")
            name = label
        else:
            documents, name = read_documents(Path(path))
    except SpecError as exc:
        report(exc)
        checked.failed = True
        return checked
    except OSError as exc:
        err.write(f"{label}: cannot read: {exc}\n")
        checked.failed = True
        return checked
    if not documents:
        err.write(f"{label}: holds no Flow or Queue object\n")
        checked.failed = True
    known = {**(templates or {}), **templates_of(documents)}
    for position, document in enumerate(documents, start=1):
        if isinstance(document, dict) and document.get("kind") == "CronFlow":
            if _check_cronflow(document, label, out, err, verbose):
                checked.manifests.append(document)
            else:
                checked.failed = True
            continue
        template_name = _template_name(document)
        try:
            verdict = check_manifest(document, source=document_source(name, position),
                                     template=known.get(template_name or ""))
        except SpecError as exc:
            report(exc)
            checked.failed = True
            continue
        ref = verdict.obj.object_ref
        if isinstance(verdict.obj, Flow):
            warnings, errors = size_problems(verdict.obj, label)
            for line in (*warnings, *errors):
                err.write(f"{label}: {line}\n")
            if errors:
                checked.failed = True
                continue
        checked.manifests.append(document)
        if not verbose:
            continue
        if verdict.compiled is None and template_name is not None:
            out.write(f"{label}: {ref}: ok (FlowTemplate {template_name} is not in the files "
                      "checked: its parameters were not checked)\n")
        elif verdict.compiled is None:
            out.write(f"{label}: {ref}: ok\n")
        else:
            exits = verdict.compiled.on_exit
            extra = "" if exits is None else f", {len(exits.nodes)} exit handler nodes"
            out.write(f"{label}: {ref}: ok ({len(verdict.compiled.nodes)} nodes, "
                      f"{len(verdict.compiled.queues)} queues{extra})\n")
    return checked


def lint_files(paths: Sequence[str], out: IO[str], err: IO[str], *,
               stdin: IO[str] | None = None) -> int:
    """Give every object of every file (directories searched, `-` for standard input) the
    verdict the admission webhook gives it; print one line per object or problem."""
    from kflow.api.errors import SpecError
    from kflow.api.manifests import read_documents

    failed = False
    files = list(manifest_paths(paths))
    templates: dict[str, FlowTemplate] = {}
    for path in files:  # a Flow may name a template kept in another file
        # A file that cannot be read is reported when it is checked itself.
        if path != STDIN:
            with contextlib.suppress(SpecError, OSError):
                templates.update(templates_of(read_documents(Path(path))[0]))
    for path in files:
        failed = check_source(path, out, err, stdin=stdin,
                              templates=templates).failed or failed
    if not files:
        err.write(f"{', '.join(paths)}: no *.yaml or *.yml file found\n")
        failed = True
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
