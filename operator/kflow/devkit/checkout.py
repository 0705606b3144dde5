"""Where the repository checkout is: the cluster scripts, CRDs and examples the kit uses."""

from __future__ import annotations

from pathlib import Path

# operator/kflow/devkit/checkout.py -> the repository root.
REPO = Path(__file__).resolve().parents[3]


def in_checkout(*parts: str) -> Path:
    """A path inside the repository; fails naming the fix when kflow is not a checkout."""
    path = REPO.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: kflow.devkit needs a checkout of the kflow repository with "
            "kflow installed from it in editable mode (`make venv`), not an installed wheel")
    return path
