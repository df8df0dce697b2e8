"""What an operator sees of a running drain: a real Prometheus scraping it, the live progress lines and the
summary (issue 27), and the deployed alert rules and dashboard queries checked by Prometheus's own promtool."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipelines.enrich_payments import launch, run
from testbed.flink import cluster as flink_cluster
from testbed.flink.worker_pool import WorkerPool
from testbed.kafka.produce import produce_events
from testbed.prometheus.server import PrometheusServer
from testbed.support.local_ports import free_ports
from tests.integration.test_flink_failover import job_args as failover_job_args
from tests.unit.test_deploy_manifests import _dashboard_exprs, _monitoring

pytestmark = pytest.mark.integration

FNAPI = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"
EVENTS = 20_000
ANY = '{__name__=~"payment_enrichment_.+"}'
PROGRESS = re.compile(r"^\[\s*(\d+)s\] consumed ([\d,]+) written ([\d,]+) .* ETA (\S+)$")


def test_a_real_prometheus_scrapes_lag_in_flight_and_latency_from_a_running_drain(
        bootstrap_servers, kafka_topic, scoring_service_factory, prometheus_binary, capsys) -> None:
    topics = {"in": kafka_topic(4, "prom-in"), "out": kafka_topic(2, "prom-out"), "dlq": kafka_topic(1, "prom-dlq")}
    produce_events(bootstrap_servers, topics["in"], count=EVENTS, seed=27)
    service = scoring_service_factory(rate=150, burst=10)          # ~1,500 events/s at batch 10: a 13 s drain
    port = free_ports(1)[0]
    with PrometheusServer([f"127.0.0.1:{port}"], scrape_interval_s=1.0) as prometheus:
        summary = run([FNAPI, f"--bootstrap_servers={bootstrap_servers}", f"--input_topic={topics['in']}",
                       f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}", "--group_id=g-prom",
                       f"--service_url={service.url}/score", "--batch_size=10", "--progress_interval=1",
                       f"--prometheus_port={port}", "--prometheus_host=127.0.0.1"])
        scrape = lambda promql: prometheus.query(promql)  # noqa: E731
        lag = scrape(f'max_over_time(payment_enrichment_kafka_lag{{topic="{topics["in"]}"}}[10m])')
        in_flight_limit = prometheus.value("max_over_time(payment_enrichment_in_flight_limit[10m])")
        latency_count = prometheus.value("max_over_time(payment_enrichment_request_latency_ms_count[10m])")
        # Counters are per process and cumulative: earlier runs in this process count too, so the run's own
        # part is the rise over the scrapes.
        written = prometheus.value("max_over_time(payment_enrichment_records_written_total[10m])"
                                   " - min_over_time(payment_enrichment_records_written_total[10m])")
        scrapes = prometheus.value("count_over_time(payment_enrichment_events_in_total[10m])")
    out = capsys.readouterr().out
    print(out)

    assert summary.counter("records_written") == EVENTS
    assert len(lag) == 4 and max(float(s["value"][1]) for s in lag) > 0     # every partition, a backlog seen
    assert in_flight_limit is not None and in_flight_limit > 0
    assert latency_count is not None and latency_count > 0
    assert written is not None and 0 < written <= EVENTS
    assert scrapes is not None and scrapes >= 3                              # scraped while it ran

    lines = [m.groups() for m in map(PROGRESS.match, out.splitlines()) if m]
    assert len(lines) >= 3, out
    shown = [int(w.replace(",", "")) for _, _, w, _ in lines]
    assert shown == sorted(shown) and len({w for w in shown if 0 < w < EVENTS}) >= 2, shown   # rising as acked
    assert [eta for *_, eta in lines if eta != "-"], "no line showed an ETA"
    assert summary.counter("throttled_ms") / 1000 <= summary.wall_s         # a share of wall time, not a sum


def test_alert_rules_and_dashboard_queries_pass_promtool(promtool: Path, tmp_path: Path) -> None:
    """The PrometheusRule's groups and every dashboard query (as a recording rule) through `promtool check rules`."""
    groups = _monitoring("alerts.yaml")["spec"]["groups"]
    dashboard = [{"record": f"dashboard:panel_{i}", "expr": expr} for i, (_, expr) in enumerate(_dashboard_exprs())]
    assert len(dashboard) > 5 and sum(len(g["rules"]) for g in groups) >= 4
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [*groups, {"name": "dashboard", "rules": dashboard}]}))
    done = subprocess.run([str(promtool), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "SUCCESS" in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.flink
@pytest.mark.slow
def test_each_sdk_worker_of_a_flink_job_is_scraped_while_it_streams(
        flink_session, flink_job_server_jar, bootstrap_servers, kafka_topic, scoring_service, prometheus_binary,
        tmp_path: Path) -> None:
    """Streaming on a session cluster at parallelism 2 (two TaskManagers, an SDK worker each): every worker
    that runs a step of the job serves /metrics on its own port of the range, and Prometheus sees the job read
    and score while it runs (Beam's metrics come only at the end). Which worker reads which partitions is
    Flink's placement: one worker may read all four (CI of 2026-12-07 evening: 2,000 scored by both, read by
    one), so each worker must serve the job's series, not necessarily `events_in`."""
    topics = {"in": kafka_topic(4, "promf-in"), "out": kafka_topic(2, "promf-out"), "dlq": kafka_topic(1, "promf-dlq")}
    first = free_ports(1)[0]
    ports = range(first, first + 4)
    with WorkerPool(tmp_path / "pool.log") as pool, \
            PrometheusServer([f"127.0.0.1:{p}" for p in ports], scrape_interval_s=1.0) as prometheus:
        launch(failover_job_args(flink_session, flink_job_server_jar, pool, bootstrap_servers, topics,
                                 scoring_service.url, "g-prom-flink", f"--prometheus_port={first}-{ports[-1]}",
                                 "--prometheus_host=127.0.0.1"))
        job = flink_cluster.running_job(flink_session.rest_port)
        try:
            produce_events(bootstrap_servers, topics["in"], count=2_000, rate_per_s=200, seed=28)
            deadline, serving, read, scored = time.monotonic() + 120, set(), 0.0, 0.0
            while len(serving) < 2 or read == 0 or scored == 0:
                assert time.monotonic() < deadline, (
                    f"{read} read, {scored} scored; {prometheus.targets_up()}; series: "
                    f"{sorted({(s['metric']['__name__'], s['metric']['instance']) for s in prometheus.query(ANY)})}")
                time.sleep(2)
                serving = {s["metric"]["instance"] for s in prometheus.query(ANY)}
                read = prometheus.value("sum(payment_enrichment_events_in_total)") or 0.0
                scored = prometheus.value("sum(payment_enrichment_events_scored_total)") or 0.0
            up = prometheus.targets_up()
            lag = prometheus.query(f'payment_enrichment_kafka_lag{{topic="{topics["in"]}"}}')
        finally:
            flink_cluster.cancel_job(flink_session.rest_port, job)
    assert sum(health == "up" for health in up.values()) == 2, up          # a port per SDK worker process
    assert serving == {instance for instance, health in up.items() if health == "up"}   # each serves the job's
    assert 0 < read <= 2_000 and 0 < scored <= 2_000
    assert {s["metric"]["partition"] for s in lag} == {"0", "1", "2", "3"}
