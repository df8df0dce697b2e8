"""The real pipeline exports live series to a fake Cloud Monitoring while it runs, and survives its errors."""
from __future__ import annotations

import json
from collections import defaultdict

import grpc
import pytest
from google.api import metric_pb2

from pipelines.enrich_payments import run
from testbed.kafka.admin import consume_all
from testbed.kafka.produce import produce_events
from transforms.monitoring.catalogue import CATALOGUE, COUNTER, DISTRIBUTION, PREFIX
from transforms.monitoring.telemetry import TELEMETRY

pytestmark = pytest.mark.integration

FNAPI = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"
Kind = metric_pb2.MetricDescriptor.MetricKind
INTERVAL_S = 0.5


def seconds(ts) -> float:
    return ts.timestamp()


def test_pipeline_exports_during_the_run_and_survives_monitoring_errors(
        bootstrap_servers, kafka_topic, scoring_service_factory, metric_service, capsys) -> None:
    topics = {"in": kafka_topic(partitions=3, prefix="in"), "out": kafka_topic(partitions=1, prefix="out"),
              "dlq": kafka_topic(partitions=1, prefix="dlq")}
    service = scoring_service_factory(rate=150, burst=10)      # a few seconds of work: several exports
    produced = produce_events(bootstrap_servers, topics["in"], count=3_000, malformed_fraction=0.01, seed=11)
    # Cloud Monitoring over quota, then briefly unavailable, as the job starts.
    metric_service.fail_next(grpc.StatusCode.RESOURCE_EXHAUSTED, times=2)
    metric_service.fail_next(grpc.StatusCode.UNAVAILABLE, times=1)
    before = TELEMETRY.snapshot()      # the registry is per process: compare what this run added
    group = "g-monitoring"
    summary = run([FNAPI, f"--bootstrap_servers={bootstrap_servers}", f"--input_topic={topics['in']}",
                   f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}", f"--group_id={group}",
                   f"--service_url={service.url}/score", "--batch_size=10", "--gcp_project=test-project",
                   f"--monitoring_endpoint={metric_service.endpoint}", f"--monitoring_interval={INTERVAL_S}",
                   f"--monitoring_min_interval={INTERVAL_S}", "--progress_interval=1"])

    # The pipeline is unaffected by the monitoring errors.
    assert metric_service.rejected == 3
    assert summary.counter("events_in") == 3_000
    out_ids = {json.loads(m.value)["txn_id"] for m in consume_all(bootstrap_servers, topics["out"], timeout=60)}
    assert out_ids == set(produced.txn_ids)

    received = metric_service.time_series()
    series: dict[tuple[str, tuple], list] = defaultdict(list)
    for ts in received:
        assert len(ts.points) == 1
        series[(ts.metric.type[len(PREFIX):], tuple(sorted(ts.metric.labels.items())))].append(ts)
    names = {name for name, _ in series}
    assert names <= set(CATALOGUE)
    assert {"events_in", "events_valid", "parse_dead_letters", "batches", "events_scored", "requests",
            "records_written", "offset_commits", "committed_offset", "batch_size", "request_latency_ms",
            "rate_limit_rps", "in_flight", "in_flight_limit", "retry_amplification", "kafka_lag",
            "oldest_uncommitted_age_s", "monitoring_dropped_points"} <= names
    assert max(len(r.time_series) for r in metric_service.requests) <= 200

    # Exported while the job ran (several points per series), spaced by the minimum interval.
    assert len(series[("events_in", ())]) >= 3
    for points in series.values():
        ends = [seconds(ts.points[0].interval.end_time) for ts in points]
        assert all(b - a >= INTERVAL_S - 1e-3 for a, b in zip(ends, ends[1:]))

    # One writer: the same resource everywhere; counters cumulative from one start time.
    resources = {tuple(sorted(ts.resource.labels.items())) for ts in received}
    assert len(resources) == 1
    labels = dict(received[0].resource.labels)
    assert labels["project_id"] == "test-project" and labels["job"] == group and labels["task_id"]
    for (name, _), points in series.items():
        kind = CATALOGUE[name].kind
        expected = Kind.CUMULATIVE if kind in (COUNTER, DISTRIBUTION) else Kind.GAUGE
        assert {ts.metric_kind for ts in points} == {expected}, name
        if expected == Kind.CUMULATIVE:
            assert len({seconds(ts.points[0].interval.start_time) for ts in points}) == 1, name

    # The last points (flushed when the run ends) match the run summary.
    def last(name: str, **labels: str):
        return series[(name, tuple(sorted(labels.items())))][-1].points[0].value

    for name in ("events_in", "events_scored", "parse_dead_letters", "batches", "records_written",
                 "offset_commits"):
        assert last(name).int64_value - before.counter(name) == summary.counter(name), name
    attempts = sum(last("requests", outcome=o).int64_value - before.counter("requests", outcome=o)
                   for (n, labels_) in series if n == "requests" for o in [dict(labels_)["outcome"]])
    assert attempts == summary.attempts
    sizes_before = before.distributions.get(("batch_size", ()))
    assert last("batch_size").distribution_value.count - (sizes_before.count if sizes_before else 0) \
        == summary.counter("batches")
    assert all(ts.points[0].value.double_value >= 1.0 for ts in series[("retry_amplification", ())])
    for p in range(3):
        assert last("kafka_lag", topic=topics["in"], partition=str(p)).int64_value == 0
        assert last("oldest_uncommitted_age_s", topic=topics["in"], partition=str(p)).double_value == 0
    assert max(ts.points[0].value.int64_value for ts in series[("kafka_lag", (("partition", "0"),
                                                                            ("topic", topics["in"])))]) > 0
    assert last("monitoring_dropped_points").int64_value - before.counter("monitoring_dropped_points") > 0

    # The live progress line printed plain lines (stdout is not a TTY under pytest).
    progress = [line for line in capsys.readouterr().out.splitlines() if " consumed " in line]
    assert progress and all("| lag " in line for line in progress)
