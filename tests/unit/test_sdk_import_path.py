"""`module:function` resolves from the current directory, as `python -m` would find it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kflow.sdk.handlers import resolve_function

REPO = Path(__file__).resolve().parents[2]


def test_a_module_of_the_current_directory_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder without __init__.py, like examples/: a namespace package of the current directory.
    (tmp_path / "acme_jobs").mkdir()
    (tmp_path / "acme_jobs" / "nodes.py").write_text("def transform(job):\n    return 42\n")
    monkeypatch.chdir(tmp_path)
    # What a console script (`kflow`, `kflow-run`) starts with: its bin folder first, no cwd.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in ("acme_jobs", "acme_jobs.nodes"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    fn = resolve_function("acme_jobs.nodes:transform")
    assert fn(None) == 42
    assert sys.modules["acme_jobs.nodes"].__file__ == str(tmp_path / "acme_jobs" / "nodes.py")


def test_the_readme_worker_command_finds_examples_from_the_repository_root() -> None:
    kflow = Path(sys.executable).parent / "kflow"
    assert kflow.exists(), f"the kflow console script is not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # A missing function: the module must have been imported to say so, and nothing after
    # resolving (Redis) is reached.
    proc = subprocess.run(
        [str(kflow), "worker", "--queue", "etl/pipeline-transform",
         "--redis", "redis://127.0.0.1:1", "examples.handlers:no_such_function"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "No module named" not in proc.stderr
    assert "module 'examples.handlers' has no attribute 'no_such_function'" in proc.stderr
