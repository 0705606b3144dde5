"""The demo and the benches use kflow (its dev kit included), never tests/; only tests import
pytest; no tool splices sys.path (the venv has kflow installed in editable mode)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = sorted([*(REPO / "hack").rglob("*.py"), *(REPO / "bench").rglob("*.py")])
PACKAGE = sorted((REPO / "operator" / "kflow").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def touches_sys_path(path: Path) -> bool:
    return any(isinstance(node, ast.Attribute) and node.attr == "path"
               and isinstance(node.value, ast.Name) and node.value.id == "sys"
               for node in ast.walk(ast.parse(path.read_text(), str(path))))


def test_the_files_are_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in TOOLS}
    assert {"hack/demo.py", "bench/bench_operator.py"} <= names
    assert REPO / "operator" / "kflow" / "devkit" / "operator.py" in PACKAGE


@pytest.mark.parametrize("path", TOOLS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_a_tool_imports_no_test_module_and_leaves_sys_path_alone(path: Path) -> None:
    from_tests = sorted(m for m in imported_modules(path) if m.split(".")[0] in ("tests", "bench"))
    assert not from_tests, f"{path.relative_to(REPO)} imports {from_tests}: use kflow.devkit"
    assert not touches_sys_path(path), f"{path.relative_to(REPO)} changes sys.path"


@pytest.mark.parametrize("path", [*TOOLS, *PACKAGE], ids=lambda p: p.relative_to(REPO).as_posix())
def test_nothing_outside_tests_imports_pytest(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.split(".")[0] == "pytest"}, (
        f"{path.relative_to(REPO)} imports pytest: a helper tools and tests share belongs in "
        "kflow.devkit, a fixture in a tests/**/conftest.py")
