"""The kflow API's pure parts: the answer caches, token keys, and the JSON shapes."""

from __future__ import annotations

from typing import Any

import pytest

from kflow.api.states import NodeState
from kflow.engine import NodeDetail, NodeRow
from kflow.server import reads
from kflow.server.app import ANNOTATION_RETRY
from kflow.server.auth import Caller, Forbidden, Gatekeeper, Unauthorized, token_key


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_tokens_are_cached_by_hash_never_as_they_are() -> None:
    key = token_key("secret-token")
    assert "secret-token" not in key and len(key) == 64
    assert key == token_key("secret-token") != token_key("secret-token2")


def test_callers_from_a_token_review_compare_by_all_their_fields() -> None:
    review = {"username": "jane", "uid": "u1", "groups": ["dev", "system:authenticated"],
              "extra": {"scopes": ["a"]}}
    jane = Caller.from_review(review)
    assert jane == Caller.from_review(dict(review))
    assert jane != Caller.from_review({**review, "groups": ["dev"]})
    assert jane.extra == (("scopes", ("a",)),)


def test_the_retry_annotation_is_the_one_the_operator_watches() -> None:
    from kflow.kube.handlers import ANNOTATION_RETRY as operators

    assert operators is ANNOTATION_RETRY == "kflow.dev/retry"  # one name, in kflow.api.models


def test_name_search_escapes_glob_characters() -> None:
    assert reads.name_glob(None) is None
    assert reads.name_glob("load") == "*load*"
    assert reads.name_glob("a*b[1]?") == "*a\\*b\\[1\\]\\?*"


def test_roots_and_queues_from_a_flow_spec() -> None:
    spec = {"nodes": [
        {"name": "send", "queue": "mail", "children": [
            {"name": "fulfill", "queue": "ship", "children": ["reserve", "prepare"]}]},
        {"name": "reserve", "queue": "stock", "children": ["pay"]},
        {"name": "prepare", "queue": "ship", "children": ["pay"]},
        {"name": "pay", "queue": "pay"},
        {"name": "alone", "queue": "mail"}]}
    assert reads.flow_roots_and_queues(spec) == (["send", "alone"],
                                                 ["mail", "pay", "ship", "stock"])


def test_a_templated_flows_detail_reads_its_pinned_nodes_and_runs() -> None:
    flow = {"metadata": {"name": "f", "namespace": "n", "uid": "u"},
            "spec": {"templateRef": {"name": "etl", "parameters": {}}},
            "status": {"phase": "Running", "runGeneration": 3,
                       "runs": [{"generation": 1, "phase": "Succeeded", "reason": "Finished"}],
                       "template": {"name": "etl", "generation": 7, "spec": {"nodes": [
                           {"name": "load", "queue": "db", "children": [
                               {"name": "get", "queue": "http"}]}]}}}}
    detail = reads.flow_detail(flow, None)
    assert (detail["roots"], detail["queues"]) == (["load"], ["db", "http"])
    assert detail["template"] == {"name": "etl", "generation": 7}
    assert detail["runGeneration"] == 3 and detail["runs"][0]["phase"] == "Succeeded"


def test_summary_from_status_and_retry_conflicts() -> None:
    flow = {"metadata": {"name": "f", "namespace": "n", "uid": "u",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"suspend": True},
            "status": {"phase": "Failed", "total": 3,
                       "counts": {"completed": 1, "failed": 1, "waitingChildren": 1}}}
    summary = reads.flow_summary(flow)
    assert summary["counts"] == {"completed": 1, "failed": 1, "waiting-children": 1}
    assert (summary["done"], summary["suspended"], summary["cancelled"]) == (2, True, False)
    assert reads.can_retry("Failed", [])
    assert not reads.can_retry("Succeeded", [])
    assert reads.can_retry("Pending", [{"type": "StateLost", "status": "True"}])


def test_node_summary_shows_the_first_line_of_the_error() -> None:
    row = NodeRow("n", "q", NodeState.FAILED, 2, "Boom\nTraceback...", None, None)
    expected = {"name": "n", "queue": "q", "state": "failed", "attempt": 2, "error": "Boom",
                "progress": None, "result": None}
    summary = reads.node_summary(row)
    assert {k: summary[k] for k in expected} == expected
    assert reads.log_text([{"node": "a", "attempt": "1", "msg": "hi"}], prefixed=True) \
        == "a[1] hi\n"


class Reviews:
    """What the API server would answer (the gatekeeper's two calls), counting the calls."""

    def __init__(self) -> None:
        self.token_reviews = 0
        self.access_reviews: list[tuple[str, str, str]] = []

    async def review_token(self, token: str) -> dict[str, Any]:
        self.token_reviews += 1
        if token != "good":
            return {"authenticated": False, "error": "invalid bearer token"}
        return {"authenticated": True, "user": {"username": "jane", "groups": ["dev"]}}

    async def review_access(self, *, user: str, groups: list[str], uid: str | None,
                            extra: dict[str, list[str]], verb: str, namespace: str,
                            resource: str) -> tuple[bool, str]:
        self.access_reviews.append((user, verb, namespace))
        return namespace == "a" and verb in ("get", "list"), "RBAC: no binding"


async def test_the_gatekeeper_asks_once_per_ttl_and_names_what_was_refused() -> None:
    clock, reviews = Clock(), Reviews()
    gate = Gatekeeper(reviews, token_ttl=60, access_ttl=10, max_entries=100, clock=clock)

    jane = await gate.authenticate("good")
    assert await gate.authenticate("good") == jane and reviews.token_reviews == 1
    for _ in range(2):
        with pytest.raises(Unauthorized, match="invalid bearer token"):
            await gate.authenticate("bad")
    assert reviews.token_reviews == 3  # refusals are not kept
    with pytest.raises(Unauthorized, match="X-Kflow-Token"):
        await gate.authenticate(None)

    await gate.authorize(jane, "get", "a")
    await gate.authorize(jane, "get", "a")
    with pytest.raises(Forbidden, match=r'cannot patch resource "flows".*"a".*no binding'):
        await gate.authorize(jane, "patch", "a")
    with pytest.raises(Forbidden, match=r'cannot get resource "flows".*namespace "b"'):
        await gate.authorize(jane, "get", "b")
    assert reviews.access_reviews == [("jane", "get", "a"), ("jane", "patch", "a"),
                                      ("jane", "get", "b")]
    clock.now = 10.0  # an RBAC change shows once the access answer expires
    await gate.authorize(jane, "get", "a")
    assert len(reviews.access_reviews) == 4


async def test_the_gatekeeper_keeps_at_most_max_entries_and_nothing_with_ttl_0() -> None:
    clock, reviews = Clock(), Reviews()
    small = Gatekeeper(reviews, token_ttl=60, access_ttl=60, max_entries=1, clock=clock)
    jane = await small.authenticate("good")
    await small.authorize(jane, "get", "a")
    await small.authorize(jane, "list", "a")  # pushes the first answer out
    await small.authorize(jane, "get", "a")
    assert [v for _, v, _ in reviews.access_reviews] == ["get", "list", "get"]

    off = Gatekeeper(reviews, token_ttl=0, access_ttl=0, max_entries=100, clock=clock)
    await off.authenticate("good")
    await off.authenticate("good")
    await off.authorize(jane, "get", "a")
    await off.authorize(jane, "get", "a")
    assert reviews.token_reviews == 3 and len(reviews.access_reviews) == 5


def test_a_wide_nodes_detail_lists_its_first_edges_and_counts_them_all() -> None:
    children = [f"c{i}" for i in range(5000)]
    detail = NodeDetail(
        row=NodeRow("root", "q", NodeState.WAITING_CHILDREN, 0, None, None),
        data=None, result=None, parents=[], children=children,
        ignored_failures={c: "e" for c in children[:1500]}, failed_children={},
        attempt_logs=[], logs=[])

    shown = reads.node_detail(detail)

    assert shown["children"] == children[:reads.EDGES_SHOWN]
    assert len(shown["ignoredFailures"]) == reads.EDGES_SHOWN
    assert shown["counts"] == {"parents": 0, "children": 5000, "ignoredFailures": 1500,
                               "failedChildren": 0}
