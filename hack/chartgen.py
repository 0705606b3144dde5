"""Keep the Helm chart's derived files true: `python hack/chartgen.py [--check]`.

Two things in charts/kflow are made from elsewhere:
  crds/<name>.yaml   copies of the CRDs in crds/ (made from the models by kflow.api.crdgen), so
                     the chart holds them itself: a packaged chart, or a checkout without
                     symbolic links, installs them too.
  README.md          the values table between its VALUES markers, from the `# --` comment
                     above each key in values.yaml and that key's entry in values.schema.json.
`--check` changes nothing and exits 1 naming every file that is out of date
(tests/chart/test_chart_files.py runs it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "kflow"
CRD_SOURCE = REPO / "crds"
BEGIN = "<!-- BEGIN VALUES (hack/chartgen.py writes this table from values.yaml) -->"
END = "<!-- END VALUES -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")


@dataclass(frozen=True)
class Documented:
    path: str  # dotted, e.g. redis.persistence.size
    text: str  # the `# --` comment, joined into one paragraph


def documented_keys(values_text: str) -> list[Documented]:
    """Every key with a `# --` comment block right above it, in file order."""
    found: list[Documented] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings we are inside
    comment: list[str] | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment is not None:
                comment.append(stripped[1:].strip())
            continue
        match = KEY_LINE.match(line)
        if not match:
            if not stripped:
                comment = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([key for _, key in stack] + [match["key"]])
        if comment is not None:
            found.append(Documented(path, " ".join(part for part in comment if part)))
            comment = None
        if not match["rest"].strip():
            stack.append((indent, match["key"]))
    return found


def lookup(tree: Any, path: str) -> Any:
    for part in path.split("."):
        tree = tree[part]
    return tree


def schema_of(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        node = node.get("properties", {}).get(part, {})
    return node


def type_text(entry: dict[str, Any]) -> str:
    kind = entry.get("type", "")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "enum" in entry:
        text = " \\| ".join(f"`{value}`" for value in entry["enum"])
    limits = [f"≥ {entry['minimum']}" if "minimum" in entry else "",
              f"> {entry['exclusiveMinimum']}" if "exclusiveMinimum" in entry else "",
              f"≤ {entry['maximum']}" if "maximum" in entry else ""]
    limits = [limit for limit in limits if limit]
    return text + (f" ({', '.join(limits)})" if limits else "")


def values_table() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for item in documented_keys(text):
        default = json.dumps(lookup(values, item.path), separators=(", ", ": "))
        description = item.text.replace("|", "\\|")
        rows.append(f"| `{item.path}` | {type_text(schema_of(schema, item.path))} "
                    f"| `{default}` | {description} |")
    return "\n".join(rows)


def expected_files() -> dict[Path, str]:
    """Each derived file -> the text it should have."""
    files = {CHART / "crds" / source.name: source.read_text()
             for source in sorted(CRD_SOURCE.glob("*.yaml"))}
    readme = CHART / "README.md"
    current = readme.read_text()
    head, begin, rest = current.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{readme}: the markers {BEGIN!r} and {END!r} are missing")
    files[readme] = f"{head}{BEGIN}\n{values_table()}\n{END}{tail}"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a derived file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        if path.is_symlink() or not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.unlink(missing_ok=True)
                path.write_text(text)
    for path in stale:
        relative = path.relative_to(REPO)
        print(f"{relative}: out of date" if args.check else f"{relative}: written")
    if args.check and stale:
        print("run: python hack/chartgen.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
