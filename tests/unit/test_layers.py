"""The layer contracts (`make layers`) hold on the code, and break when a lower layer reaches up.

Each case copies operator/kflow to a temporary directory, plants one import that a contract
forbids, and runs lint-imports on the copy with the repository's own [tool.importlinter]
config: the contract that forbids the planted import breaks, and its report names the import.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGE = ROOT / "operator" / "kflow"
# lint-imports, run by the interpreter running the tests (its console script, minus the path).
LINT_IMPORTS = [
    sys.executable,
    "-c",
    "import sys, importlinter.cli as c; sys.exit(c.lint_imports_command())",
]

CONTRACTS: dict[str, str] = {
    c["id"]: c["name"]
    for c in tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
}
# A contract's line in the summary: its name, KEPT or BROKEN, maybe "(1 ignored import)".
SUMMARY = re.compile(r"^(?P<name>.+?) (?P<verdict>KEPT|BROKEN)( \(.*\))?$")


def copy_package(tmp_path: Path) -> Path:
    """A copy of operator/kflow under tmp_path, without bytecode; returns the copy's kflow dir."""
    shutil.copytree(PACKAGE, tmp_path / "kflow", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "kflow"


def plant(package: Path, module: str, line: str) -> None:
    """Append `line` to the module at `module` (a path inside kflow/); creates it if absent."""
    path = package / module
    with path.open("a") as f:
        f.write(f"\n{line}  # planted by test_layers\n")


def check(root: Path) -> tuple[int, str, dict[str, str]]:
    """Run the contracts on the kflow under root: exit code, report, verdict per contract id."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "250", "NO_COLOR": "1"}
    proc = subprocess.run(
        [*LINT_IMPORTS, "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = proc.stdout + proc.stderr
    by_name = {
        m["name"]: m["verdict"]
        for m in (SUMMARY.match(line) for line in report.splitlines())
        if m and m["name"] in CONTRACTS.values()
    }
    verdicts = {cid: by_name.get(name, "MISSING") for cid, name in CONTRACTS.items()}
    return proc.returncode, report, verdicts


def section(report: str, contract: str) -> str:
    """The part of the report that explains why `contract` (an id) broke."""
    heads = {cid: f"{name}\n{'-' * len(name)}\n" for cid, name in CONTRACTS.items()}
    start = report.find(heads[contract])
    assert start >= 0, f"no section for {contract!r}:\n{report}"
    body = report[start + len(heads[contract]) :]
    ends = [i for i in (body.find(h) for h in heads.values()) if i >= 0]
    return body[: min(ends, default=len(body))]


def test_the_contracts_state_the_layers_and_the_forbidden_imports() -> None:
    assert set(CONTRACTS) == {"layers", "no-redis-above-store", "no-kube-below-kube"}


def test_the_code_keeps_every_contract(tmp_path: Path) -> None:
    copy_package(tmp_path)
    code, report, verdicts = check(tmp_path)
    assert code == 0, report
    assert verdicts == dict.fromkeys(CONTRACTS, "KEPT"), report


@pytest.mark.parametrize(
    ("module", "line", "broken", "named"),
    [
        # A lower layer importing a higher one.
        ("store/keys.py", "import kflow.kube", "layers", "kflow.store.keys -> kflow.kube"),
        (
            "api/models.py",
            "from kflow.graph import compile_flow",
            "layers",
            "kflow.api.models -> kflow.graph",
        ),
        # kube and sdk are independent of each other.
        ("sdk/worker.py", "import kflow.kube", "layers", "kflow.sdk.worker -> kflow.kube"),
        # The engine speaks to Redis only through the store.
        ("engine/types.py", "import redis", "no-redis-above-store", "kflow.engine.types -> redis"),
        # Nothing below kube reaches Kubernetes.
        ("sdk/job.py", "import kopf", "no-kube-below-kube", "kflow.sdk.job -> kopf"),
        (
            "store/keys.py",
            "from kubernetes import client",
            "no-kube-below-kube",
            "kflow.store.keys -> kubernetes",
        ),
    ],
    ids=[
        "store-imports-kube",
        "api-imports-graph",
        "sdk-imports-kube",
        "engine-imports-redis",
        "sdk-imports-kopf",
        "store-imports-kubernetes",
    ],
)
def test_a_planted_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, broken: str, named: str
) -> None:
    plant(copy_package(tmp_path), module, line)
    code, report, verdicts = check(tmp_path)
    assert code != 0, report
    assert verdicts[broken] == "BROKEN", report
    assert named in section(report, broken), report


def test_a_subpackage_without_a_layer_breaks_the_layers(tmp_path: Path) -> None:
    package = copy_package(tmp_path)
    (package / "util").mkdir()
    (package / "util" / "__init__.py").write_text('"""Somewhere to put things."""\n')
    code, report, verdicts = check(tmp_path)
    assert code != 0, report
    assert verdicts["layers"] == "BROKEN", report
    assert "- kflow.util" in section(report, "layers"), report
