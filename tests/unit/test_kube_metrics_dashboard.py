"""The Grafana dashboard in dashboards/kflow.json asks only for metrics the operator exports:
every name in its PromQL (panels and variables) is a series of a Metrics object's /metrics
text, so renaming a metric without the dashboard fails here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kflow.devkit.checkout import REPO
from tests.unit.test_kube_metrics import exercised

DASHBOARD = REPO / "dashboards" / "kflow.json"
# PromQL words that look like names: keywords, and the modifiers whose (...) holds labels.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL text of the dashboard: panel targets (rows included), query variables."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield query["query"] if isinstance(query, dict) else query


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (Grafana's label_values(m, l) too)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, $__rate_interval
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\blabel_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,[^)]*\)", r"\1", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables outside matchers
    names = set()
    for match in IDENTIFIER.finditer(text):
        name = match.group()
        if text[match.end():].lstrip().startswith("(") or name.lower() in KEYWORDS:
            continue  # a function call or a keyword
        names.add(name)
    return names


def exported() -> tuple[set[str], set[str]]:
    """(family names, sample names) of an exercised Metrics object's exposition."""
    families = list(text_string_to_metric_families(exercised().render()))
    return {f.name for f in families}, {s.name for f in families for s in f.samples}


def test_the_name_parser_finds_names_and_only_names() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (queue, le) (rate('
                        'kflow_node_duration_seconds_bucket{queue=~"$queue"}[$__rate_interval])))'
                        ) == {"kflow_node_duration_seconds_bucket"}
    assert metric_names("label_values(kflow_queue_ready, queue)") == {"kflow_queue_ready"}
    assert metric_names('a_total / on (job) group_left b{x="c d"} or vector(0)') == {
        "a_total", "b"}


def test_every_metric_the_dashboard_reads_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {name for expr in expressions(dashboard) for name in metric_names(expr)}
    families, samples = exported()

    missing = sorted(name for name in used if name not in samples
                     and re.sub(r"_(bucket|sum|count)$", "", name) not in families)
    assert missing == [], f"{DASHBOARD.name} reads metrics /metrics does not have: {missing}"
    # What the dashboard is for: none of these may drop out of it unnoticed.
    assert {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in used} >= {
        "kflow_flows", "kflow_nodes_dispatched", "kflow_nodes_completed", "kflow_node_failures",
        "kflow_node_duration_seconds", "kflow_queue_wait_seconds", "kflow_queue_ready",
        "kflow_queue_active", "kflow_queue_delayed", "kflow_queue_workers",
        "kflow_redis_script_duration_seconds", "kflow_redis_persistence_enabled",
        "kflow_build_info", "process_cpu_seconds", "process_resident_memory_bytes"}


def test_the_dashboard_is_importable_as_grafana_reads_it() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets") or []:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "job", "queue"]
