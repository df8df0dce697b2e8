"""The Cloud Monitoring exporter against an in-process fake MetricService, on a fake clock."""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import grpc
import pytest
from google.api import metric_pb2
from google.cloud import monitoring_v3

from tests.fixtures.metric_service import FakeMetricService
from tests.unit.fake_clock import FakeClock
from transforms.monitoring import exporter as exporter_module
from transforms.monitoring.catalogue import CATALOGUE, PREFIX
from transforms.monitoring.config import MAX_SERIES_PER_REQUEST, MIN_INTERVAL_S, MonitoringConfig
from transforms.monitoring.exporter import Exporter, ensure_exporter, make_client, stop_exporters
from transforms.monitoring.telemetry import Telemetry

Kind = metric_pb2.MetricDescriptor.MetricKind
ValueType = metric_pb2.MetricDescriptor.ValueType


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture
def telemetry(clock: FakeClock) -> Telemetry:
    t = Telemetry()
    t.started_at = clock.now() - 60
    return t


def make_exporter(service: FakeMetricService, telemetry: Telemetry, clock: FakeClock, **config) -> Exporter:
    cfg = MonitoringConfig(project="proj", job="job-1", endpoint=service.endpoint, timeout_s=2.0, **config)
    return Exporter(cfg, make_client(cfg), telemetry=telemetry, clock=clock.now, sleep=clock.sleep)


def by_name(series: list[monitoring_v3.TimeSeries]) -> dict[str, list[monitoring_v3.TimeSeries]]:
    out: dict[str, list[monitoring_v3.TimeSeries]] = {}
    for ts in series:
        out.setdefault(ts.metric.type[len(PREFIX):], []).append(ts)
    return out


def seconds(ts) -> float:
    return ts.timestamp() if hasattr(ts, "timestamp") else ts.seconds + ts.nanos / 1e9


def test_requests_hold_at_most_200_series_each_once(metric_service, telemetry, clock) -> None:
    for p in range(450):
        telemetry.set("committed_offset", p, topic="t", partition=p)
    telemetry.inc("events_in", 7)
    sent = make_exporter(metric_service, telemetry, clock).export_once()
    sizes = [len(r.time_series) for r in metric_service.requests]
    assert sent == 451 and sum(sizes) == 451
    assert max(sizes) == MAX_SERIES_PER_REQUEST and len(sizes) == 3
    for request in metric_service.requests:
        keys = [(ts.metric.type, tuple(sorted(ts.metric.labels.items()))) for ts in request.time_series]
        assert len(keys) == len(set(keys))                 # one point per series per request
        assert request.name == "projects/proj"


def test_points_of_one_series_are_at_least_the_minimum_interval_apart(metric_service, telemetry, clock) -> None:
    telemetry.inc("events_in")
    exporter = make_exporter(metric_service, telemetry, clock)
    assert exporter.export_once() == 1
    clock.advance(MIN_INTERVAL_S / 2)
    telemetry.inc("events_valid")                          # a new series is due at once ...
    assert exporter.export_once() == 1                     # ... the old one is not
    clock.advance(MIN_INTERVAL_S / 2)
    assert exporter.export_once() == 1                     # events_in due again, batches not yet
    clock.advance(MIN_INTERVAL_S)
    assert exporter.export_once() == 2
    ends: dict[str, list[float]] = {}
    for ts in metric_service.time_series():
        ends.setdefault(ts.metric.type, []).append(seconds(ts.points[0].interval.end_time))
    for points in ends.values():
        assert all(b - a >= MIN_INTERVAL_S for a, b in zip(points, points[1:]))


def test_kinds_labels_resource_and_stable_start_times(metric_service, telemetry, clock) -> None:
    telemetry.inc("requests", 3, outcome="ok")
    telemetry.inc("requests", 1, outcome="429")
    telemetry.inc("batches", 2)
    telemetry.set("in_flight", 5)
    telemetry.set("rate_limit_rps", 12.5)
    telemetry.set("kafka_lag", 40, topic="payments", partition=3)
    latencies = [0.5, 3, 3, 100, 70_000]
    for v in latencies:
        telemetry.observe("request_latency_ms", v)
    telemetry.inc("not_in_the_catalogue")
    exporter = make_exporter(metric_service, telemetry, clock)
    exporter.export_once()
    clock.advance(MIN_INTERVAL_S)
    telemetry.inc("requests", 1, outcome="ok")
    exporter.export_once()
    series = by_name(metric_service.time_series())

    assert "not_in_the_catalogue" not in series
    requests = series["requests"]
    assert {ts.metric.labels["outcome"] for ts in requests} == {"ok", "429"}
    for ts in requests:
        assert ts.metric_kind == Kind.CUMULATIVE and ts.value_type == ValueType.INT64 and len(ts.points) == 1
        assert seconds(ts.points[0].interval.start_time) == pytest.approx(telemetry.started_at, abs=1e-6)
    ok = [ts.points[0].value.int64_value for ts in requests if ts.metric.labels["outcome"] == "ok"]
    assert ok == [3, 4]                                    # cumulative, same start, growing end
    for name in ("in_flight", "rate_limit_rps", "kafka_lag"):
        point = series[name][0].points[0]
        assert series[name][0].metric_kind == Kind.GAUGE
        assert seconds(point.interval.start_time) == seconds(point.interval.end_time)
    assert series["rate_limit_rps"][0].points[0].value.double_value == 12.5
    assert series["kafka_lag"][0].value_type == ValueType.INT64
    assert dict(series["kafka_lag"][0].metric.labels) == {"topic": "payments", "partition": "3"}

    dist_ts = series["request_latency_ms"][0]
    assert dist_ts.metric_kind == Kind.CUMULATIVE and dist_ts.value_type == ValueType.DISTRIBUTION
    dist = dist_ts.points[0].value.distribution_value
    assert dist.count == len(latencies) and sum(dist.bucket_counts) == len(latencies)
    assert dist.mean == pytest.approx(statistics.fmean(latencies))
    assert dist.sum_of_squared_deviation == pytest.approx(statistics.pvariance(latencies) * len(latencies))
    assert (dist.range.min, dist.range.max) == (0.5, 70_000)
    assert dist.bucket_counts[0] == 1 and dist.bucket_counts[-1] == 1   # underflow (<1) and overflow

    resources = {tuple(sorted(ts.resource.labels.items())) for ts in metric_service.time_series()}
    assert len(resources) == 1
    labels = dict(metric_service.time_series()[0].resource.labels)
    assert metric_service.time_series()[0].resource.type == "generic_task"
    assert labels["project_id"] == "proj" and labels["job"] == "job-1"
    assert labels["location"] == "global" and labels["namespace"] == "payment-enrichment"
    assert re.fullmatch(r".+-\d+-[0-9a-f]{6}", labels["task_id"])

    described = {d.type: d for d in metric_service.descriptors}
    assert len(metric_service.descriptors) == len(described)          # each descriptor once
    assert described[PREFIX + "requests"].labels[0].key == "outcome"
    assert described[PREFIX + "request_latency_ms"].unit == "ms"


def test_retry_amplification_is_attempts_per_batch_completed_in_the_window(metric_service, telemetry, clock) -> None:
    exporter = make_exporter(metric_service, telemetry, clock)
    telemetry.inc("batches", 10)
    telemetry.inc("requests", 10, outcome="ok")
    exporter.export_once()
    clock.advance(MIN_INTERVAL_S)
    telemetry.inc("batches", 4)                            # 4 batches, 12 attempts: 3.0 in this window
    telemetry.inc("requests", 4, outcome="ok")
    telemetry.inc("requests", 8, outcome="429")
    exporter.export_once()
    clock.advance(MIN_INTERVAL_S)
    exporter.export_once()                                 # no batch completed: no point
    values = [ts.points[0].value.double_value for ts in by_name(metric_service.time_series())["retry_amplification"]]
    assert values == [1.0, 3.0]


def test_transient_error_is_retried_once_and_loses_nothing(metric_service, telemetry, clock) -> None:
    telemetry.inc("events_in")
    metric_service.fail_next(grpc.StatusCode.UNAVAILABLE)
    assert make_exporter(metric_service, telemetry, clock).export_once() == 1
    assert metric_service.rejected == 1
    assert telemetry.snapshot().counter("monitoring_dropped_points") == 0


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.INVALID_ARGUMENT])
def test_persistent_errors_drop_the_points_and_count_them(metric_service, telemetry, clock, code) -> None:
    telemetry.inc("events_in", 5)
    telemetry.set("in_flight", 1)
    exporter = make_exporter(metric_service, telemetry, clock)
    attempts = 1 if code == grpc.StatusCode.INVALID_ARGUMENT else 2    # not retried / bounded retry
    metric_service.fail_next(code, times=attempts)
    assert exporter.export_once() == 0
    assert metric_service.rejected == attempts
    assert telemetry.snapshot().counter("monitoring_dropped_points") == 2
    assert exporter.export_once() == 3                     # dropped series are due at once, plus the drop counter
    dropped = by_name(metric_service.time_series())["monitoring_dropped_points"]
    assert dropped[0].points[0].value.int64_value == 2


def test_unreachable_or_slow_service_drops_within_the_timeout(telemetry, clock) -> None:
    slow = FakeMetricService().start()
    slow.delay_s = 1.0
    try:
        telemetry.inc("events_in")
        exporter = make_exporter(slow, telemetry, clock)
        exporter.config = MonitoringConfig(project="proj", endpoint=slow.endpoint, timeout_s=0.2)
        assert exporter.export_once() == 0
        assert telemetry.snapshot().counter("monitoring_dropped_points") == 1
    finally:
        slow.stop()
    gone = FakeMetricService()                             # never started: connection refused
    exporter = make_exporter(gone, telemetry, clock)
    assert exporter.export_once() == 0
    assert telemetry.snapshot().counter("monitoring_dropped_points") >= 2


def test_ensure_exporter_is_idempotent_per_process_and_writers_are_distinct(metric_service) -> None:
    assert ensure_exporter(None) is None
    config = MonitoringConfig(project="proj", endpoint=metric_service.endpoint, interval_s=30)
    try:
        first = ensure_exporter(config)
        assert first is not None and ensure_exporter(MonitoringConfig(**vars(config))) is first
        other = ensure_exporter(MonitoringConfig(project="proj", endpoint=metric_service.endpoint, job="other"))
        assert other is not None and other.resource.task_id != first.resource.task_id
    finally:
        stop_exporters(flush=False)
    assert exporter_module._EXPORTERS == {}


def test_configuration_guards_the_quota_floor() -> None:
    with pytest.raises(ValueError):
        MonitoringConfig(project="p", interval_s=5)
    assert MonitoringConfig(project="p", interval_s=0.5, min_interval_s=0.5).interval_s == 0.5


def test_every_catalogued_metric_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text(encoding="utf-8")
    missing = [name for name in CATALOGUE if f"`{name}`" not in doc]
    assert not missing
