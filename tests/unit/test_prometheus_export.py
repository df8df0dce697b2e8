"""The Prometheus endpoint: the catalogue as families, served from the live registry, one server per process."""
from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from transforms.monitoring import metrics, prometheus
from transforms.monitoring.telemetry import Telemetry


def _recorded() -> Telemetry:
    t = Telemetry()
    metrics.counter("events_scored", t).inc(90)
    metrics.counter("requests", t).inc(12, outcome="ok")
    metrics.counter("requests", t).inc(3, outcome="429")
    metrics.counter("batches", t).inc(10)
    metrics.gauge("in_flight_limit", t).set(16)
    metrics.gauge("kafka_lag", t).set(40, topic="in", partition=0)
    metrics.gauge("kafka_lag", t).set(2, topic="in", partition=1)
    latency = metrics.distribution("request_latency_ms", t)
    for ms in (0.5, 3.0, 3.5, 700.0, 100_000.0):
        latency.observe(ms)
    return t


def _parsed(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _scrape(port: int) -> dict[str, dict[tuple, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return _parsed(resp.read().decode())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_counters_gauges_and_histograms_by_the_catalogue() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    registry = CollectorRegistry()
    registry.register(prometheus.TelemetryCollector(_recorded()))
    got = _parsed(generate_latest(registry).decode())
    assert got["payment_enrichment_events_scored_total"] == {(): 90}
    assert got["payment_enrichment_requests_total"] == {(("outcome", "ok"),): 12, (("outcome", "429"),): 3}
    assert got["payment_enrichment_retry_amplification"] == {(): 1.5}
    assert got["payment_enrichment_in_flight_limit"] == {(): 16}
    assert got["payment_enrichment_kafka_lag"][(("partition", "0"), ("topic", "in"))] == 40
    buckets = got["payment_enrichment_request_latency_ms_bucket"]
    assert buckets[(("le", "1.0"),)] == 1 and buckets[(("le", "4.0"),)] == 3
    assert buckets[(("le", "1024.0"),)] == 4 and buckets[(("le", "65536.0"),)] == 4
    assert buckets[(("le", "+Inf"),)] == 5 == got["payment_enrichment_request_latency_ms_count"][()]
    assert got["payment_enrichment_request_latency_ms_sum"][()] == pytest.approx(100_707.0)
    cumulative = [v for _, v in sorted(buckets.items(), key=lambda kv: float(kv[0][0][1]))]
    assert cumulative == sorted(cumulative)                   # cumulative, as Prometheus requires


@pytest.mark.parametrize(("text", "error"), [("9464", None), ("9464-9467", None), ("x", "PORT or FIRST-LAST"),
                                             ("9467-9464", "FIRST <= LAST"), ("0", "FIRST <= LAST")])
def test_port_ranges(text: str, error: str | None) -> None:
    if error is None:
        first, last = prometheus.parse_ports(text)
        assert first <= last
    else:
        with pytest.raises(ValueError, match=error):
            prometheus.parse_ports(text)


def test_one_server_per_process_takes_the_next_free_port_and_serves_live_values() -> None:
    busy, free = _free_port(), None
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        holder.listen()
        telemetry = _recorded()
        config = prometheus.PrometheusConfig(ports=(busy, busy + 20), host="127.0.0.1")
        try:
            free = prometheus.ensure_server(config, telemetry)
            assert free is not None and busy < free <= busy + 20
            assert prometheus.ensure_server(config, telemetry) == free          # idempotent
            metrics.counter("events_scored", telemetry).inc(10)
            assert _scrape(free)["payment_enrichment_events_scored_total"] == {(): 100}   # live, not a copy
        finally:
            prometheus.stop_server()
    with pytest.raises(OSError):
        _scrape(free)                                                            # stopped with the run


def test_no_free_port_leaves_the_job_unscraped_instead_of_failing() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert prometheus.ensure_server(prometheus.PrometheusConfig(ports=(port, port), host="127.0.0.1")) is None
