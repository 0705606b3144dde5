"""`kflow lint` on Flows too large for `kubectl apply`, and too large for Kubernetes at all."""

from __future__ import annotations

import io
import json
from pathlib import Path

from kflow.cli.main import ANNOTATIONS_LIMIT, ETCD_REQUEST_LIMIT, lint_files


def fan_out(nodes: int) -> dict[str, object]:
    """A fan-out with names of typical length (about 76 bytes of JSON per node)."""
    leaves = [f"process-item-{i:05d}" for i in range(nodes - 1)]
    return {
        "apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
        "metadata": {"name": "big", "namespace": "etl"},
        "spec": {"nodes": [{"name": "aggregate-results", "queue": "aggregator",
                            "children": leaves},
                           *({"name": name, "queue": "item-processor"} for name in leaves)]},
    }


def lint(tmp_path: Path, doc: dict[str, object]) -> tuple[int, str, str, int]:
    path = tmp_path / "flow.yaml"
    text = json.dumps(doc, separators=(",", ":"))  # JSON is YAML
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    code = lint_files([str(path)], out, err)
    return code, out.getvalue(), err.getvalue(), len(text.encode())


def test_a_flow_that_fits_an_annotation_lints_clean(tmp_path: Path) -> None:
    code, out, err, size = lint(tmp_path, fan_out(3_000))
    assert size < ANNOTATIONS_LIMIT - 100
    assert code == 0 and err == ""
    assert "ok (3000 nodes, 2 queues)" in out


def test_a_flow_too_large_for_kubectl_apply_is_a_warning_naming_kubectl_create(
        tmp_path: Path) -> None:
    code, out, err, size = lint(tmp_path, fan_out(3_500))
    assert ANNOTATIONS_LIMIT < size < ETCD_REQUEST_LIMIT
    assert code == 0  # a warning: the Flow is valid, only the command must change
    assert "ok (3500 nodes, 2 queues)" in out
    assert "Flow etl/big: warning: is 260 KiB as JSON, too large for `kubectl apply`" in err
    assert f"kubectl create -f {tmp_path / 'flow.yaml'}" in err


def test_the_annotation_limit_counts_the_flows_own_annotations(tmp_path: Path) -> None:
    doc = fan_out(2_000)
    doc["metadata"]["annotations"] = {"team": "x" * 60_000}  # type: ignore[index]
    code, _, err, size = lint(tmp_path, doc)
    # The copy fits, but the annotation counts twice: in the copy and on its own.
    assert size + 60_000 > ANNOTATIONS_LIMIT > size
    assert code == 0 and "too large for `kubectl apply`" in err


def test_a_flow_over_etcds_limit_is_an_error_saying_what_to_do(tmp_path: Path) -> None:
    code, out, err, size = lint(tmp_path, fan_out(21_000))
    assert size > ETCD_REQUEST_LIMIT
    assert code == 1 and out == ""
    assert "Flow etl/big: is 1.52 MiB as JSON, over the 1.50 MiB etcd stores per object" in err
    assert "split it into several Flows, or use fewer nodes or shorter names" in err
