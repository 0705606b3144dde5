"""The README's field tables come from the model descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from kflow.api import docgen
from kflow.api.models import FlowSpec, NodeOpts, QueueSpec


def test_every_field_has_a_row_with_its_description() -> None:
    text = docgen.render()
    for model, prefix in ((FlowSpec, "spec."), (NodeOpts, ""), (QueueSpec, "spec.")):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
            assert f"| `{prefix}{info.alias or name}` |" in text
    assert "| `attempts` | integer, ≥ 1 |" in text
    assert "| `delay` | duration |" in text
    assert "| `spec.workers.max` | integer, ≥ 1 | required |" in text


def test_update_and_check_rewrite_only_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# kflow\n\nintro\n{docgen.START}\nold\n{docgen.END}\n\nafter\n")
    assert docgen.main(["--check", str(readme)]) == 1
    assert docgen.main(["--update", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# kflow\n\nintro\n") and text.endswith(f"{docgen.END}\n\nafter\n")
    assert "old" not in text and "| `spec.nodes` |" in text
    assert docgen.main(["--check", str(readme)]) == 0


def test_missing_markers_are_an_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert docgen.main(["--check", str(readme)]) == 2
    with pytest.raises(ValueError, match="markers"):
        docgen.replace_between_markers("x", "y")
