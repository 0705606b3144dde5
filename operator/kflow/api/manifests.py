"""Turn manifests (dicts or multi-document YAML) into validated Flow and Queue models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kflow.api.errors import SpecError, combine, format_path, from_validation_error
from kflow.api.models import (
    API_VERSION,
    MAX_NESTING,
    NESTING_FIX,
    SPEC_FIELD_NAMES,
    Flow,
    FlowTemplate,
    ObjectMeta,
    Queue,
    nested_deeper_than,
    node_path,
    object_ref,
)

Manifest = Flow | Queue | FlowTemplate
_KINDS: dict[str, type[Manifest]] = {"Flow": Flow, "Queue": Queue, "FlowTemplate": FlowTemplate}

# Bounds on what a user hands kflow (README, Limits). A manifest file is read up to 3 MiB: the
# API server takes no request body above 3 MiB and etcd stores no object above 1.5 MiB, so a
# larger file cannot be a Flow for Kubernetes. `kflow run --local` stores nothing in etcd and
# reads up to MAX_LOCAL_MANIFEST_BYTES.
MAX_MANIFEST_BYTES = 3 * 1024 * 1024
MAX_LOCAL_MANIFEST_BYTES = 64 * 1024 * 1024
# Nodes that YAML aliases may add to one document, each alias counted as a copy of what it
# names (kubectl sends the expanded JSON): a "billion laughs" is refused while it is read.
MAX_ALIAS_NODES = 100_000
# MAX_NESTING (api.models) bounds the levels within one field; inline children are nodes, not
# levels: each node's fields are measured from the node, so a long inline chain stays valid.


class _RefusedYAML(Exception):
    """Valid YAML that kflow will not expand; the message says where and why."""


class _JSONLoader(yaml.SafeLoader):
    """A safe YAML loader that leaves dates as strings, as kubectl does when it sends JSON,
    and that refuses aliases which would expand a document beyond MAX_ALIAS_NODES nodes or
    which refer to themselves."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded: dict[int, int] = {}  # id(node) -> nodes it stands for, expanded
        self._alias_nodes = 0

    def compose_document(self) -> yaml.Node | None:
        self._expanded = {}
        self._alias_nodes = 0
        node: yaml.Node | None = super().compose_document()
        self._expanded = {}
        return node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._count_alias(event.anchor, self._expanded.get(id(target)),
                                  event.start_mark.line + 1)
            alias: yaml.Node | None = super().compose_node(parent, index)
            return alias
        node: yaml.Node | None = super().compose_node(parent, index)
        if node is not None:
            size = 1
            for child in _yaml_children(node):
                size += self._expanded.get(id(child), 1)
            self._expanded[id(node)] = size
        return node

    def _count_alias(self, anchor: str, size: int | None, line: int) -> None:
        if size is None:  # its anchor is still being read: the alias is inside it
            raise _RefusedYAML(
                f"line {line}: the alias *{anchor} refers to the value it is in, a cycle JSON "
                "cannot hold; write the value out instead")
        self._alias_nodes += size
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise _RefusedYAML(
                f"line {line}: YAML aliases would expand one document beyond "
                f"{MAX_ALIAS_NODES:,} nodes (each alias counts as a copy of what it names); "
                "write options that many nodes share once, in spec.defaults")


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


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


class NestingError(SpecError):
    """A field nested deeper than MAX_NESTING levels, found before any recursive code reads it."""


class _NodeAt:
    """Where a node is written, rendered on demand (a deep inline chain stores O(1) per node)."""

    __slots__ = ("depth", "index", "name", "parent", "top")

    def __init__(self, parent: _NodeAt | None, index: int, raw_name: Any) -> None:
        self.parent, self.index = parent, index
        self.top: int = index if parent is None else parent.top
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.name = raw_name if isinstance(raw_name, str) and raw_name else f"#{index}"

    @property
    def path(self) -> str:
        return node_path(self)


def nesting_errors(doc: Mapping[str, Any], ref: str) -> list[SpecError]:
    """A NestingError for every field of the manifest nested deeper than MAX_NESTING levels.

    Iterative over nodes and inline children; run before validation, whose encoders, error
    messages and reprs recurse.
    """
    errors: list[SpecError] = []
    too_deep = f"is nested deeper than {MAX_NESTING} levels; {NESTING_FIX}"

    def check(value: Any, path: str, node: _NodeAt | None = None) -> None:
        if nested_deeper_than(value, MAX_NESTING):
            where = f'node "{node.name}": ' if node is not None else ""
            errors.append(NestingError(ref, path, f"{where}{path} {too_deep}"))

    nodes: list[tuple[Mapping[str, Any], _NodeAt]] = []
    for key, value in doc.items():
        if key == "spec" and isinstance(value, Mapping):
            for spec_key, spec_value in value.items():
                if spec_key == "nodes" and isinstance(spec_value, list):
                    for index, entry in enumerate(spec_value):
                        if isinstance(entry, Mapping):
                            nodes.append((entry, _NodeAt(None, index, entry.get("name"))))
                        else:
                            check(entry, f"spec.nodes[{index}]")
                else:
                    check(spec_value, format_path(("spec", str(spec_key))))
        elif key == "metadata" and isinstance(value, Mapping):
            for meta_key, meta_value in value.items():
                check(meta_value, format_path(("metadata", str(meta_key))))
        else:
            check(value, str(key))
    nodes.reverse()
    while nodes:  # document order, depth first
        raw, at = nodes.pop()
        inline: list[tuple[Mapping[str, Any], _NodeAt]] = []
        for key, value in raw.items():
            if key != "children":
                check(value, f"{at.path}.{key}", at)
            elif not isinstance(value, list):
                check(value, f"{at.path}.children", at)
            else:
                for entry, child in enumerate(value):
                    if isinstance(child, Mapping):
                        inline.append((child, _NodeAt(at, entry, child.get("name"))))
                    else:
                        check(child, f"{at.path}.children[{entry}]", at)
        nodes.extend(reversed(inline))
    return errors


def _shown(value: Any) -> str:
    """A short repr of a scalar; the type of anything else (which may be nested arbitrarily)."""
    if value is None or isinstance(value, str | int | float | bool):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


def parse_manifest(doc: Mapping[str, Any], *, source: str = "manifest") -> Manifest:
    """Validate one manifest as a Flow, a Queue or a FlowTemplate, inline children included.

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
    if not isinstance(kind, str) or kind not in _KINDS:
        raise SpecError(
            source, "kind",
            f"kind is {_shown(kind)}; kflow reads only kind Flow, Queue or FlowTemplate")
    ref = _raw_ref(doc, str(kind))
    if doc.get("apiVersion") != API_VERSION:
        raise SpecError(
            ref,
            "apiVersion",
            f"apiVersion is {_shown(doc.get('apiVersion'))}; set it to {API_VERSION!r}",
        )
    too_deep = nesting_errors(doc, ref)
    if too_deep:
        raise combine(too_deep)
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


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            name, "", f"is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            "cannot be decoded; save the file as UTF-8") from None


def _too_large(name: str, limit: int) -> SpecError:
    return SpecError(
        name, "", f"is larger than {limit // (1024 * 1024)} MiB, more than kflow reads from one "
        "manifest file; split it into several files (and its Flow into several Flows)")


def _read(source: str | Path, max_bytes: int) -> tuple[str, str]:
    """(text, name for messages) of a path or of YAML text; at most `max_bytes`, UTF-8."""
    if isinstance(source, Path):
        path = source
    elif "\n" not in source and source.strip() and Path(source).is_file():
        path = Path(source)
    else:
        if len(source) > max_bytes or len(source.encode()) > max_bytes:
            raise _too_large("<text>", max_bytes)
        return source, "<text>"
    name = str(source)
    with path.open("rb") as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(name, max_bytes)
    return _decode(data, name), name


def read_documents(
    source: str | Path, *, max_bytes: int = MAX_MANIFEST_BYTES
) -> tuple[list[Any], str]:
    """The non-empty YAML documents of a file (a Path, or a string naming one) or of YAML text,
    as plain data, and the name to give the source in messages. Raises SpecError, also for a
    source over `max_bytes`, bytes that are not UTF-8 and aliases that expand too far."""
    text, name = _read(source, max_bytes)
    try:
        documents = list(yaml.load_all(text, Loader=_JSONLoader))
    except _RefusedYAML as exc:
        raise SpecError(name, "", str(exc)) from None
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


def load_manifests(
    source: str | Path, *, max_bytes: int = MAX_MANIFEST_BYTES
) -> list[Manifest]:
    """Parse every document of a YAML file (a Path, or a string that names a file) or YAML text.

    Empty documents are skipped. Raises SpecError with the problems of every document at once.
    """
    documents, name = read_documents(source, max_bytes=max_bytes)
    results: list[Manifest] = []
    errors: list[SpecError] = []
    for position, document in enumerate(documents, start=1):
        try:
            results.append(parse_manifest(document, source=document_source(name, position)))
        except SpecError as exc:
            errors.extend(exc.errors)
    if errors:
        raise combine(errors)
    return results
