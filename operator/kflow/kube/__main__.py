"""`python -m kflow.kube`: run the operator in this process (what `kflow operator` calls)."""

from __future__ import annotations

from kflow.kube.main import run_operator

if __name__ == "__main__":
    raise SystemExit(run_operator())
