"""The chart's optional ServiceMonitor (Prometheus Operator): off by default; on, it scrapes
the metrics Service and nothing else, with the interval and labels asked for."""

from __future__ import annotations

from tests.chart.conftest import Helm

URL = "redis.url=redis://redis.example:6379/0"


def test_no_servicemonitor_unless_asked(helm: Helm) -> None:
    assert helm.template(URL).kinds("ServiceMonitor") == []


def test_the_servicemonitor_scrapes_the_metrics_service_only(helm: Helm) -> None:
    rendered = helm.template(URL, "metrics.serviceMonitor.enabled=true",
                             "metrics.serviceMonitor.interval=15s",
                             "metrics.serviceMonitor.scrapeTimeout=10s",
                             "metrics.serviceMonitor.labels.release=prometheus",
                             "metrics.port=9100", namespace="ops")

    [monitor] = rendered.kinds("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["ops"]}
    assert spec["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s",
                                  "scrapeTimeout": "10s"}]
    wanted = spec["selector"]["matchLabels"].items()
    selected = [s["metadata"]["name"] for s in rendered.kinds("Service")
                if wanted <= (s["metadata"].get("labels") or {}).items()]
    assert selected == ["kflow-metrics"]
    service = rendered.get("Service", "kflow-metrics")
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert service["spec"]["ports"][0]["port"] == 9100


def test_bad_servicemonitor_values_are_refused_with_the_key(helm: Helm) -> None:
    without_metrics = helm.template_fails(URL, "metrics.serviceMonitor.enabled=true",
                                          "metrics.enabled=false")
    assert "metrics.serviceMonitor.enabled=true needs metrics.enabled=true" in without_metrics
    assert "serviceMonitor" in helm.template_fails(URL, "metrics.serviceMonitor.interval=30")
    assert "serviceMonitor" in helm.template_fails(URL, "metrics.serviceMonitor.colour=red")
