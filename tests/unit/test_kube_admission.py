"""The admission webhook's answer is `kflow lint`'s, line for line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from kflow.cli.main import lint_files
from kflow.kube.admission import refusal

# An inline child with a bad option, a reference to a node that does not exist: one apply,
# both problems.
BAD_FLOW: dict[str, Any] = {
    "apiVersion": "kflow.dev/v1alpha1", "kind": "Flow",
    "metadata": {"name": "orders", "namespace": "etl", "uid": "u-1", "managedFields": []},
    "spec": {"nodes": [
        {"name": "load", "queue": "q", "children": [
            "transfrom",
            {"name": "extract", "queue": "q", "opts": {"backoff": {"type": "linear"}}}]},
        {"name": "transform", "queue": "q"},
    ]},
}


def test_the_webhook_refuses_with_the_lines_lint_prints(tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(BAD_FLOW))  # JSON is YAML
    out, err = io.StringIO(), io.StringIO()

    assert lint_files([str(path)], out, err) == 1
    message = refusal("Flow", BAD_FLOW, None)

    assert message is not None
    assert [f"{path}: {line}" for line in message.splitlines()] == err.getvalue().splitlines()
    assert 'node "extract": spec.nodes[0].children[1].opts.backoff.type' in message
    assert 'node "load" lists child "transfrom", which no node defines (did you mean ' \
           '"transform"?)' in message


def test_the_webhook_names_the_namespace_of_the_request_when_the_object_has_none() -> None:
    body = {**BAD_FLOW, "metadata": {"name": "orders"}}

    message = refusal("Flow", body, "etl")

    assert message is not None and message.startswith("Flow etl/orders: ")


def test_a_valid_flow_and_queue_are_let_through() -> None:
    flow = {**BAD_FLOW, "spec": {"nodes": [{"name": "a", "queue": "q"}]}}
    queue = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": "q"},
             "spec": {"mode": "Worker", "workers": {"max": 2}}}

    assert refusal("Flow", flow, "etl") is None
    assert refusal("Queue", queue, "etl") is None
    assert "spec.workers is missing" in str(refusal("Queue", {**queue, "spec": {"mode": "Worker"}},
                                                    "etl"))


def test_a_queue_is_judged_by_the_pod_policy_only_when_one_is_given() -> None:
    from kflow.settings import PodPolicySettings

    queue = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue", "metadata": {"name": "q"},
             "spec": {"template": {"spec": {"hostNetwork": True, "containers": [
                 {"name": "main", "image": "runner"}]}}}}

    message = refusal("Queue", queue, "etl", PodPolicySettings())

    assert message == ("Queue etl/q: spec.template.spec.hostNetwork is not allowed by the "
                       "operator's pod policy (podPolicy.allowHostNetwork in the Helm values, "
                       "KFLOW_POLICY_ALLOW_HOST_NETWORK for the operator); remove it (pods "
                       "reach Services through the cluster network)")
    assert refusal("Queue", queue, "etl") is None, "kflow lint knows no policy"
    assert refusal("Queue", queue, "etl", PodPolicySettings(allow_host_network=True)) is None
