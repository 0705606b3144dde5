"""Flow and Queue models: what parses, what defaults apply, and how bad input is reported."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kflow.api import (
    MAX_DATA_BYTES,
    Flow,
    FlowStatus,
    NodeCounts,
    NodeOpts,
    Queue,
    SpecError,
    SpecErrors,
    load_manifests,
    parse_manifest,
)
from kflow.api.errors import format_path

DESIGN_FLOW = """
apiVersion: kflow.dev/v1alpha1
kind: Flow
metadata: {generateName: order-}
spec:
  defaults: {attempts: 3, backoff: {type: exponential, delay: 1s, maxDelay: 1m}}
  ttlSecondsAfterFinished: 86400
  nodes:
  - name: send-confirmation
    queue: order-confirmation
    data: {orderId: A-17, placed: 2024-01-01}
    children:
    - name: fulfill-order
      queue: order-fulfillment
      children: [reserve-inventory, prepare-shipping]
  - name: reserve-inventory
    queue: inventory
    children: [process-payment]
  - name: prepare-shipping
    queue: shipping
    children: [process-payment]
  - name: process-payment
    queue: payment
    opts: {attempts: 5, priority: 1, timeout: 2m}
    children:
    - {name: validate-items, queue: item-validation, opts: {onFailure: ignore}}
    - {name: validate-customer, queue: customer-validation}
---
apiVersion: kflow.dev/v1alpha1
kind: Queue
metadata: {name: pipeline-extract, namespace: etl}
spec:
  mode: Worker
  concurrency: 10
  rateLimit: {max: 100, per: 1m}
  template: {spec: {containers: [{name: main, image: ghcr.io/acme/extract:1.4}]}}
  workers: {min: 0, max: 20, nodesPerWorker: 10, idleSeconds: 60}
"""


def flow_doc(*nodes: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kflow.dev/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "orders-7", "namespace": "etl"},
        "spec": {"nodes": list(nodes), **spec},
    }


def queue_doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kflow.dev/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": "extract", "namespace": "etl"},
        "spec": spec,
    }


def node(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "queue": "q", **fields}


def spec_error(doc: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_manifest(doc)
    return caught.value


def test_design_example_parses_with_durations_in_ms() -> None:
    flow, queue = load_manifests(DESIGN_FLOW)
    assert isinstance(flow, Flow) and isinstance(queue, Queue)
    assert flow.object_ref == "Flow default/order-"
    assert flow.spec.defaults is not None and flow.spec.defaults.backoff is not None
    assert flow.spec.defaults.backoff.delay == 1_000
    assert flow.spec.defaults.backoff.max_delay == 60_000
    payment = flow.spec.nodes[3]
    assert payment.opts is not None and payment.opts.timeout == 120_000
    # Dates stay strings, as kubectl would send them.
    assert flow.spec.nodes[0].data == {"orderId": "A-17", "placed": "2024-01-01"}
    assert [item.node.name for item in flow.located_nodes()] == [
        "send-confirmation",
        "fulfill-order",
        "reserve-inventory",
        "prepare-shipping",
        "process-payment",
        "validate-items",
        "validate-customer",
    ]
    assert queue.queue_id == "etl/pipeline-extract"
    assert queue.spec.rate_limit is not None and queue.spec.rate_limit.per == 60_000
    assert queue.spec.workers is not None and queue.spec.workers.nodes_per_worker == 10


def test_load_manifests_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(DESIGN_FLOW + "\n---\n")  # a trailing empty document is skipped
    assert [obj.kind for obj in load_manifests(path)] == ["Flow", "Queue"]
    assert [obj.kind for obj in load_manifests(str(path))] == ["Flow", "Queue"]


def test_models_accept_python_names_and_dump_camel_case() -> None:
    opts = NodeOpts(attempts=2, on_failure="ignore", fail_parent_on_failure=False)
    assert opts.model_dump(by_alias=True, exclude_none=True) == {
        "attempts": 2,
        "onFailure": "ignore",
        "failParentOnFailure": False,
    }


@pytest.mark.parametrize(
    ("opts", "policy"),
    [
        ({}, "failParent"),
        ({"onFailure": "remove"}, "remove"),
        ({"failParentOnFailure": True}, "failParent"),
        ({"ignoreDependencyOnFailure": True}, "ignore"),
        ({"removeDependencyOnFailure": True}, "remove"),
        ({"continueParentOnFailure": True}, "continueParent"),
        # BullMQ's optional child: the parent still runs and sees the failure.
        ({"failParentOnFailure": False}, "ignore"),
        ({"ignoreDependencyOnFailure": False}, "failParent"),
        ({"failParentOnFailure": False, "removeDependencyOnFailure": True}, "remove"),
        ({"onFailure": "ignore", "ignoreDependencyOnFailure": True}, "ignore"),
        ({"onFailure": "remove", "failParentOnFailure": False}, "remove"),
    ],
)
def test_bullmq_aliases_select_on_failure(opts: dict[str, Any], policy: str) -> None:
    flow = parse_manifest(flow_doc(node("a", opts=opts)))
    assert isinstance(flow, Flow)
    parsed = flow.spec.nodes[0].opts
    assert parsed is not None
    assert parsed.on_failure_policy() == policy


def test_false_alias_does_not_keep_the_policy_it_denies() -> None:
    opts = NodeOpts.model_validate({"ignoreDependencyOnFailure": False})
    assert opts.on_failure_policy(inherited="ignore") == "failParent"
    assert opts.on_failure_policy(inherited="remove") == "remove"


@pytest.mark.parametrize(
    ("opts", "fragment"),
    [
        (
            {"failParentOnFailure": True, "ignoreDependencyOnFailure": True},
            "failParentOnFailure and ignoreDependencyOnFailure are both set to true",
        ),
        (
            {"onFailure": "ignore", "failParentOnFailure": True},
            "onFailure is 'ignore' but failParentOnFailure is true",
        ),
        (
            {"onFailure": "ignore", "ignoreDependencyOnFailure": False},
            "onFailure is 'ignore' but ignoreDependencyOnFailure is false",
        ),
    ],
)
def test_conflicting_failure_settings_are_rejected(opts: dict[str, Any], fragment: str) -> None:
    error = spec_error(flow_doc(node("load", opts=opts)))
    assert str(error).startswith('Flow etl/orders-7: node "load": spec.nodes[0].opts')
    assert fragment in str(error)
    assert error.field == "spec.nodes[0].opts"


@pytest.mark.parametrize(
    ("opts", "field", "fragment"),
    [
        ({"attempts": -1}, "spec.nodes[0].opts.attempts", "must be at least 1 (got -1)"),
        ({"attempts": 0}, "spec.nodes[0].opts.attempts", "must be at least 1"),
        ({"attempts": "3"}, "spec.nodes[0].opts.attempts", "must be a whole number"),
        ({"attempts": 2.5}, "spec.nodes[0].opts.attempts", "must be a whole number"),
        ({"priority": -1}, "spec.nodes[0].opts.priority", "must be at least 0"),
        ({"priority": 2_097_152}, "spec.nodes[0].opts.priority", "must be at most 2097151"),
        ({"delay": -5}, "spec.nodes[0].opts.delay", "must not be negative"),
        ({"delay": "-1s"}, "spec.nodes[0].opts.delay", "must not be negative"),
        ({"delay": "soon"}, "spec.nodes[0].opts.delay", "is not a duration"),
        ({"timeout": 0}, "spec.nodes[0].opts.timeout", "must be longer than 0"),
        ({"onFailure": "explode"}, "spec.nodes[0].opts.onFailure", "must be one of"),
        (
            {"ignoreDependencyOnFailure": "yes"},
            "spec.nodes[0].opts.ignoreDependencyOnFailure",
            "must be true or false",
        ),
        ({"backoff": {"type": "linear"}}, "spec.nodes[0].opts.backoff.type", "must be one of"),
        (
            {"backoff": {"delay": "1m", "maxDelay": "1s"}},
            "spec.nodes[0].opts.backoff",
            "maxDelay (1s) is shorter than delay (1m)",
        ),
        ({"backoff": {"jitter": 2}}, "spec.nodes[0].opts.backoff.jitter", "at most 1"),
        ({"atempts": 3}, "spec.nodes[0].opts.atempts", '(did you mean "attempts"?)'),
    ],
)
def test_bad_options_name_flow_node_and_field(
    opts: dict[str, Any], field: str, fragment: str
) -> None:
    error = spec_error(flow_doc(node("load", opts=opts)))
    assert error.object_ref == "Flow etl/orders-7"
    assert error.field == field
    assert str(error).startswith(f'Flow etl/orders-7: node "load": {field}')
    assert fragment in str(error)


@pytest.mark.parametrize(("backoff", "delay"), [(1000, 1000), ("2s", 2000)])
def test_bare_backoff_is_a_fixed_delay(backoff: int | str, delay: int) -> None:
    flow = parse_manifest(flow_doc(node("a", opts={"backoff": backoff})))
    assert isinstance(flow, Flow)
    opts = flow.spec.nodes[0].opts
    assert opts is not None and opts.backoff is not None
    assert (opts.backoff.type, opts.backoff.delay) == ("fixed", delay)


def test_five_megabyte_data_is_rejected_with_the_limit() -> None:
    error = spec_error(flow_doc(node("load", data={"blob": "x" * 5 * 1024 * 1024})))
    assert error.field == "spec.nodes[0].data"
    message = str(error)
    assert message.startswith('Flow etl/orders-7: node "load": spec.nodes[0].data is 5 MiB')
    assert "limit of 256 KiB per node" in message
    assert "etcd" in message and "reference" in message


def test_data_just_under_the_limit_is_accepted() -> None:
    blob = "x" * (MAX_DATA_BYTES - len('{"b":""}'))
    flow = parse_manifest(flow_doc(node("load", data={"b": blob})))
    assert isinstance(flow, Flow)


def test_data_must_be_json() -> None:
    error = spec_error(flow_doc(node("load", data={"n": float("nan")})))
    assert "must be plain JSON" in str(error)


def test_all_problems_are_reported_at_once() -> None:
    error = spec_error(
        flow_doc(
            node("a", opts={"attempts": -1}),
            {"name": "b", "queue": "Bad_Queue"},
            node("c", children=[5]),
            {"queue": "q"},
        )
    )
    assert isinstance(error, SpecErrors)
    fields = [inner.field for inner in error.errors]
    assert fields == [
        "spec.nodes[0].opts.attempts",
        "spec.nodes[1].queue",
        "spec.nodes[2].children[0]",
        "spec.nodes[3].name",
    ]
    text = str(error)
    assert text.startswith("Flow etl/orders-7: 4 problems:")
    assert "must be a Kubernetes object name" in text
    assert "a child must be the name of a node" in text
    assert 'node "#3": spec.nodes[3].name is required' in text


def test_inline_children_are_validated_with_their_path() -> None:
    doc = flow_doc(
        node("top", children=[node("mid", children=[node("deep", opts={"attempts": 0})])])
    )
    error = spec_error(doc)
    assert error.field == "spec.nodes[0].children[0].children[0].opts.attempts"
    assert str(error).startswith('Flow etl/orders-7: node "deep": spec.nodes[0].children[0]')


def test_wrong_kind_and_api_version() -> None:
    doc = flow_doc(node("a"))
    doc["apiVersion"] = "kflow.dev/v1"
    assert "set it to 'kflow.dev/v1alpha1'" in str(spec_error(doc))
    doc = flow_doc(node("a"))
    doc["kind"] = "Workflow"
    assert "kflow reads only kind Flow, Queue or FlowTemplate" in str(spec_error(doc))
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_manifest(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_yaml_errors_name_the_document() -> None:
    bad = (
        DESIGN_FLOW + "\n---\n" + "apiVersion: kflow.dev/v1alpha1\nkind: Flow\nspec: {nodes: []}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_manifests(bad)
    assert "Flow default/<unnamed>" in str(caught.value)
    assert "a Flow needs either spec.nodes (at least one node) or spec.templateRef" in str(
        caught.value)
    with pytest.raises(SpecError, match="is not valid YAML"):
        load_manifests("a: [unclosed\n")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"mode": "Worker"}, "mode is Worker but spec.workers is missing"),
        ({"mode": "Lambda"}, "spec.mode must be one of"),
        ({"workers": {"min": 5, "max": 2}}, "workers.min (5) is larger than workers.max (2)"),
        ({"concurrency": 0}, "spec.concurrency must be at least 1"),
        ({"rateLimit": {"max": 10, "per": 0}}, "spec.rateLimit.per must be longer than 0"),
        ({"rateLimit": {"max": 10}}, "spec.rateLimit.per is required"),
    ],
)
def test_bad_queue_specs(spec: dict[str, Any], fragment: str) -> None:
    error = spec_error(queue_doc(**spec))
    assert str(error).startswith("Queue etl/extract: ")
    assert fragment in str(error)


def test_queue_defaults() -> None:
    queue = parse_manifest(queue_doc(mode="Worker", workers={"max": 3}))
    assert isinstance(queue, Queue)
    assert queue.spec.workers is not None
    assert (queue.spec.workers.min, queue.spec.workers.nodes_per_worker) == (0, 1)
    assert queue.spec.workers.idle_seconds == 60


def test_status_round_trips_in_camel_case_and_stays_bounded() -> None:
    status = FlowStatus.model_validate(
        {
            "phase": "Failed",
            "total": 3,
            "progress": "3/3",
            "counts": NodeCounts.from_states(
                {"completed": 2, "failed": 1, "waiting-children": 0}
            ).model_dump(by_alias=True),
            "startedAt": "2026-11-28T10:00:00Z",
            "conditions": [{"type": "Complete", "status": "False", "reason": "NodeFailed"}],
            "firstFailures": [{"node": "load", "attempt": 3, "error": "boom" * 1000}],
        }
    )
    dumped = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert dumped["counts"]["completed"] == 2 and dumped["counts"]["waitingChildren"] == 0
    assert dumped["startedAt"] == "2026-11-28T10:00:00Z"
    assert len(dumped["firstFailures"][0]["error"]) == 1024
    with pytest.raises(ValueError, match="at most 10"):
        FlowStatus.model_validate(
            {"firstFailures": [{"node": f"n{i}", "attempt": 1, "error": "x"} for i in range(11)]}
        )


def test_format_path() -> None:
    assert format_path(("spec", "nodes", 2, "opts", "attempts")) == "spec.nodes[2].opts.attempts"


def test_examples_parse() -> None:
    examples = sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.yaml"))
    if not examples:
        pytest.skip("no examples/ in this checkout")
    for path in examples:
        objects = load_manifests(path)
        assert any(obj.kind == "Flow" for obj in objects), path


def test_parse_does_not_mutate_its_input() -> None:
    doc = flow_doc(node("a", children=[node("b")]), defaults={"backoff": 100})
    before = copy.deepcopy(doc)
    parse_manifest(doc)
    assert doc == before


def test_data_limit_counts_utf8_bytes_not_characters() -> None:
    # Each "é" is one character but two bytes: under the limit in characters, twice it in bytes.
    blob = "é" * (MAX_DATA_BYTES - len('{"b":""}'))
    error = spec_error(flow_doc(node("load", data={"b": blob})))
    assert error.field == "spec.nodes[0].data"
    assert "is 512 KiB serialised as JSON, over the limit of 256 KiB" in str(error)
    half = "é" * ((MAX_DATA_BYTES - len('{"b":""}')) // 2)
    assert isinstance(parse_manifest(flow_doc(node("load", data={"b": half}))), Flow)


def test_data_one_byte_over_the_limit_says_so_in_bytes() -> None:
    blob = "x" * (MAX_DATA_BYTES - len('{"b":""}') + 1)
    error = spec_error(flow_doc(node("load", data={"b": blob})))
    # Rounded to KiB both figures would read "256 KiB", which explains nothing.
    assert f"is {MAX_DATA_BYTES + 1} bytes serialised as JSON, over the limit of " \
        f"{MAX_DATA_BYTES} bytes" in str(error)


def test_three_aliases_are_listed_with_all() -> None:
    opts = {"failParentOnFailure": True, "ignoreDependencyOnFailure": True,
            "continueParentOnFailure": True}
    error = spec_error(flow_doc(node("load", opts=opts)))
    assert ("failParentOnFailure, ignoreDependencyOnFailure and continueParentOnFailure are "
            "all set to true") in str(error)


def test_worker_mode_without_workers_shows_the_yaml_to_add() -> None:
    error = spec_error(queue_doc(mode="Worker"))
    assert "add workers: {max: N}" in str(error)
    assert "{{" not in str(error)
