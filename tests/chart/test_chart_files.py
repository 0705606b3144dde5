"""The chart's derived files are up to date: its CRDs equal crds/, its README's values table
matches values.yaml and values.schema.json (hack/chartgen.py), and every value is documented."""

from __future__ import annotations

import subprocess
import sys

import yaml
from hack.chartgen import documented_keys

from kflow.devkit.checkout import REPO
from tests.chart.conftest import CHART


def test_the_derived_files_are_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(REPO / "hack" / "chartgen.py"), "--check"],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_chart_holds_its_crds_as_files() -> None:
    for source in (REPO / "crds").glob("*.yaml"):
        copy = CHART / "crds" / source.name
        assert not copy.is_symlink(), f"{copy} is a symbolic link; run hack/chartgen.py"
        assert copy.read_text() == source.read_text()


# Values that are one object as a whole (documented once, not key by key).
OBJECT_VALUES = ("resources", "redis.resources", "server.resources",
                 "podPolicy.defaultSecurityContext")


def leaves(tree: dict[str, object], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in OBJECT_VALUES:
            found |= leaves(value, f"{path}.")  # type: ignore[arg-type]
        else:
            found.add(path)
    return found


def test_every_value_has_a_comment_and_a_schema_entry() -> None:
    text = (CHART / "values.yaml").read_text()
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())

    documented = {item.path for item in documented_keys(text)}
    assert leaves(yaml.safe_load(text)) == documented
    for path in documented:
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
        assert "type" in node or "enum" in node, path
