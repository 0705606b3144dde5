"""Turn manifests (dicts or multi-document YAML) into validated Flow and Queue models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kflow.api.errors import SpecError, combine, from_validation_error
from kflow.api.models import API_VERSION, SPEC_FIELD_NAMES, Flow, ObjectMeta, Queue, object_ref

_KINDS: dict[str, type[Flow] | type[Queue]] = {"Flow": Flow, "Queue": Queue}


class _JSONLoader(yaml.SafeLoader):
    """A safe YAML loader that leaves dates as strings, as kubectl does when it sends JSON."""


_JSONLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _raw_ref(doc: Mapping[str, Any], kind: str) -> str:
    raw_meta = doc.get("metadata")
    meta = ObjectMeta()
    if isinstance(raw_meta, Mapping):
        name, generate, namespace = (
            raw_meta.get("name"),
            raw_meta.get("generateName"),
            raw_meta.get("namespace"),
        )
        meta = ObjectMeta(
            name=name if isinstance(name, str) else None,
            generate_name=generate if isinstance(generate, str) else None,
            namespace=namespace if isinstance(namespace, str) else None,
        )
    return object_ref(kind, meta)


def parse_manifest(doc: Mapping[str, Any], *, source: str = "manifest") -> Flow | Queue:
    """Validate one manifest as a Flow or a Queue, inline children included.

    Raises SpecError naming the object, the field and the fix; SpecErrors when there are several.
    `source` names the manifest in errors that come before its kind and name are known.
    """
    if not isinstance(doc, Mapping):
        raise SpecError(
            source,
            "",
            f"a manifest must be a mapping with apiVersion, kind, metadata and spec, "
            f"not {type(doc).__name__}",
        )
    kind = doc.get("kind")
    if kind not in _KINDS:
        raise SpecError(source, "kind", f"kind is {kind!r}; kflow reads only kind Flow or Queue")
    ref = _raw_ref(doc, str(kind))
    if doc.get("apiVersion") != API_VERSION:
        raise SpecError(
            ref,
            "apiVersion",
            f"apiVersion is {doc.get('apiVersion')!r}; set it to {API_VERSION!r}",
        )
    model = _KINDS[str(kind)]
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        raise combine(
            from_validation_error(exc, ref, root_input=doc, known_fields=SPEC_FIELD_NAMES)
        ) from None
    if isinstance(parsed, Flow):
        parsed.located_nodes()  # validates inline children; raises SpecError
    return parsed


def _read(source: str | Path) -> tuple[str, str]:
    """(text, name for messages) of a path or of YAML text."""
    if isinstance(source, Path):
        return source.read_text(), str(source)
    if "\n" not in source and source.strip() and Path(source).is_file():
        return Path(source).read_text(), source
    return source, "<text>"


def read_documents(source: str | Path) -> tuple[list[Any], str]:
    """The non-empty YAML documents of a file (a Path, or a string naming one) or of YAML text,
    as plain data, and the name to give the source in messages. Raises SpecError."""
    text, name = _read(source)
    try:
        documents = list(yaml.load_all(text, Loader=_JSONLoader))
    except yaml.YAMLError as exc:
        raise SpecError(name, "", f"is not valid YAML: {exc}") from None
    except RecursionError:
        raise SpecError(
            name,
            "",
            "is nested too deeply for the YAML reader; refer to children by name "
            "instead of nesting them inline",
        ) from None
    return [document for document in documents if document is not None], name


def document_source(name: str, position: int) -> str:
    """How messages name a document before its kind and name are known (position from 1)."""
    return f"{name} (document {position})"


def load_manifests(source: str | Path) -> list[Flow | Queue]:
    """Parse every document of a YAML file (a Path, or a string that names a file) or YAML text.

    Empty documents are skipped. Raises SpecError with the problems of every document at once.
    """
    documents, name = read_documents(source)
    results: list[Flow | Queue] = []
    errors: list[SpecError] = []
    for position, document in enumerate(documents, start=1):
        try:
            results.append(parse_manifest(document, source=document_source(name, position)))
        except SpecError as exc:
            errors.extend(exc.errors)
    if errors:
        raise combine(errors)
    return results
