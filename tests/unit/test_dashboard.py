"""Dashboards as code: every metric a chart references is one the exporter really writes."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.metric_service import FakeMetricService
from transforms.monitoring.catalogue import CATALOGUE, COUNTER, DISTRIBUTION, RETRY_AMPLIFICATION
from transforms.monitoring.config import MonitoringConfig
from transforms.monitoring.exporter import Exporter, make_client
from transforms.monitoring.telemetry import Telemetry

DEPLOY = Path(__file__).parents[2] / "deploy" / "monitoring"


def filters(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from [value] if key == "filter" else filters(value)
    elif isinstance(node, list):
        for item in node:
            yield from filters(item)


def referenced_types(dashboard: dict) -> set[str]:
    return {t for f in filters(dashboard) for t in re.findall(r'metric\.type="([^"]+)"', f)}


def written_types() -> set[str]:
    """Records every catalogued metric once, exports it to the fake server, returns what arrived."""
    telemetry = Telemetry()
    for spec in CATALOGUE.values():
        labels = {key: "0" for key in spec.labels}
        if spec.kind == COUNTER:
            telemetry.inc(spec.name, 1, **labels)
        elif spec.kind == DISTRIBUTION:
            telemetry.observe(spec.name, 1.0, **labels)
        elif spec.name != RETRY_AMPLIFICATION:
            telemetry.set(spec.name, 1.0, **labels)
    service = FakeMetricService().start()
    try:
        config = MonitoringConfig(project="p", endpoint=service.endpoint)
        Exporter(config, make_client(config), telemetry=telemetry).export_once()
        return {ts.metric.type for ts in service.time_series()}
    finally:
        service.stop()


def test_dashboard_charts_only_metrics_the_exporter_writes() -> None:
    dashboard = json.loads((DEPLOY / "dashboard.json").read_text())
    tiles = dashboard["mosaicLayout"]["tiles"]
    assert tiles and all({"width", "height", "widget"} <= tile.keys() for tile in tiles)
    written = written_types()
    assert written == {spec.type for spec in CATALOGUE.values()}      # the catalogue is complete and exported
    referenced = referenced_types(dashboard)
    assert referenced and referenced <= written
    for name in ("events_scored", "requests", "retry_amplification", "in_flight", "in_flight_limit",
                 "rate_limit_rps", "kafka_lag", "oldest_uncommitted_age_s", "parse_dead_letters",
                 "score_dead_letters"):
        assert CATALOGUE[name].type in referenced, name


def test_flink_prometheus_reporter_config() -> None:
    config = yaml.safe_load((DEPLOY / "flink-prometheus.yaml").read_text())
    assert config["metrics.reporter.prom.factory.class"] == \
        "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
    assert re.fullmatch(r"\d+(-\d+)?", str(config["metrics.reporter.prom.port"]))
