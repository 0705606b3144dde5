"""One value per concept: a queue's id, and its runtime config derived once from its spec."""

from __future__ import annotations

import pickle

import pytest

from kflow.api import Queue, QueueId, SpecError, parse_manifest
from kflow.engine import QueueConfig
from kflow.kube.queues import queue_info


def test_queue_id_is_built_from_its_parts_and_reads_them_back() -> None:
    qid = QueueId("etl", "extract")
    assert qid == "etl/extract" and (qid.namespace, qid.name) == ("etl", "extract")
    assert {qid: 1}["etl/extract"] == 1  # a str: a dict key and a Redis key part as it is
    assert QueueId.parse("etl/extract") == qid and QueueId.parse(qid) is qid
    assert pickle.loads(pickle.dumps(qid)).name == "extract"
    for bad in [("", "x"), ("a/b", "x"), ("etl", ""), ("etl", "a/b")]:
        with pytest.raises(ValueError, match="namespace and a name"):
            QueueId(*bad)
    with pytest.raises(ValueError):
        QueueId.parse("no-slash")


def queue(spec: dict[str, object]) -> Queue:
    obj = parse_manifest({"apiVersion": "kflow.dev/v1alpha1", "kind": "Queue",
                          "metadata": {"name": "extract", "namespace": "etl"},
                          "spec": {"template": {"spec": {"containers": [
                              {"name": "main", "image": "runner"}]}}, **spec}})
    assert isinstance(obj, Queue)
    return obj


def test_queue_config_is_derived_once_for_the_operator_and_the_local_runner() -> None:
    q = queue({"concurrency": 4, "rateLimit": {"max": 10, "per": "1m"}})
    assert q.queue_id == QueueId("etl", "extract")
    assert QueueConfig.of(q.spec, max_stalled=3) == QueueConfig(
        concurrency=4, rate_max=10, rate_per_ms=60_000, max_stalled=3)
    assert QueueConfig.of(None, max_stalled=1, default_concurrency=8) == QueueConfig(
        concurrency=8, max_stalled=1)
    # The operator's view of the same object carries the same config.
    info = queue_info("etl", "extract", {"concurrency": 4, "rateLimit": {"max": 10, "per": "1m"},
                                         "template": q.spec.template})
    assert info.queue_id == q.queue_id and info.config == QueueConfig.of(q.spec)


def test_an_invalid_queue_object_is_a_spec_error_not_a_crash() -> None:
    with pytest.raises(SpecError, match="per"):
        queue_info("etl", "extract", {"rateLimit": {"max": 10, "per": "0s"},
                                      "template": {"spec": {"containers": [{"name": "m"}]}}})
