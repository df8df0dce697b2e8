"""The enrichment job end to end on the FnApiRunner, against the real broker and scoring service."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from pipelines.enrich_payments import run
from pipelines.summary import RunSummary
from testbed.kafka.admin import committed_offsets, consume_all, end_offsets
from testbed.kafka.produce import produce_events
from testbed.scoring.model import score_txn
from transforms.monitoring.catalogue import CATALOGUE

pytestmark = pytest.mark.integration

FNAPI = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def drain(bootstrap: str, topics: dict[str, str], url: str, group: str, *extra: str) -> RunSummary:
    return run([FNAPI, f"--bootstrap_servers={bootstrap}", f"--input_topic={topics['in']}",
                f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}", f"--group_id={group}",
                f"--service_url={url}/score", *extra])


@pytest.fixture
def topics(kafka_topic) -> dict[str, str]:
    return {"in": kafka_topic(partitions=4, prefix="in"), "out": kafka_topic(partitions=2, prefix="out"),
            "dlq": kafka_topic(partitions=1, prefix="dlq")}


def test_drain_writes_every_event_once_and_commits_end_offsets(bootstrap_servers, topics, scoring_service) -> None:
    produced = produce_events(bootstrap_servers, topics["in"], count=20_000, malformed_fraction=0.01, seed=7)
    summary = drain(bootstrap_servers, topics, scoring_service.url, "g-drain", "--batch_size=50")

    results = consume_all(bootstrap_servers, topics["out"], timeout=60)
    dead = consume_all(bootstrap_servers, topics["dlq"], timeout=60)
    out_ids = [json.loads(m.value)["txn_id"] for m in results]
    assert sorted(out_ids) == sorted(produced.txn_ids)          # every valid id exactly once
    assert len(dead) == produced.malformed == 200
    assert all(json.loads(m.value)["stage"] == "parse" and json.loads(m.value)["reason"] == "invalid_event"
               for m in dead)
    for m in results[:200]:
        doc = json.loads(m.value)
        assert (doc["score"], doc["decision"]) == score_txn(doc["txn_id"])
        assert m.key.decode() == doc["txn_id"]
    assert summary.counter("events_in") == 20_000
    assert summary.counter("events_scored") == len(results)
    assert summary.counter("parse_dead_letters") == len(dead)
    assert summary.counter("records_written") == len(results) + len(dead)
    assert committed_offsets(bootstrap_servers, "g-drain", topics["in"]) == end_offsets(bootstrap_servers, topics["in"])

    again = drain(bootstrap_servers, topics, scoring_service.url, "g-drain")
    assert again.counter("events_in") == 0                     # nothing left to do


def test_the_summary_reports_the_offsets_the_group_committed(bootstrap_servers, topics, scoring_service) -> None:
    """Several reads per partition, a commit each: the summary's committed offsets are the group's in Kafka (Beam
    reported the gauge of an early bundle: 500 of about 2,000 per partition)."""
    produce_events(bootstrap_servers, topics["in"], count=8_000, seed=11)
    summary = drain(bootstrap_servers, topics, scoring_service.url, "g-gauge", "--max_records_per_read=500",
                    "--commit_interval=0.2")

    prefix = CATALOGUE["committed_offset"].beam_key(topic=topics["in"], partition="")
    reported = {int(name[len(prefix):]): value for name, value in summary.gauges.items() if name.startswith(prefix)}
    assert reported == committed_offsets(bootstrap_servers, "g-gauge", topics["in"]) == \
        end_offsets(bootstrap_servers, topics["in"])


def test_rate_limited_service_sees_at_most_the_in_flight_cap(bootstrap_servers, topics, scoring_service_factory) -> None:
    service = scoring_service_factory(rate=200, burst=20, **{"max-concurrency": 64})
    produced = produce_events(bootstrap_servers, topics["in"], count=4_000, seed=8)
    summary = drain(bootstrap_servers, topics, service.url, "g-rate", "--batch_size=5", "--max_in_flight=8",
                    "--initial_rate=400")
    stats = service.stats()
    assert stats["peak_concurrency"] <= 8
    batches = summary.counter("batches")
    assert summary.attempts / batches <= 1.1
    assert summary.counter("events_scored") == len(produced.txn_ids)
    share_429 = summary.counter("requests", outcome="429") / summary.attempts
    print(f"429 share {share_429:.2%}, attempts/batch {summary.attempts / batches:.3f}")


def test_outage_mid_run_loses_nothing_and_dead_letters_nothing(bootstrap_servers, topics, scoring_service_factory) -> None:
    service = scoring_service_factory(rate=100)
    produced = produce_events(bootstrap_servers, topics["in"], count=2_000, seed=9)

    def outage_soon() -> None:
        time.sleep(3)
        service.fault(kind="outage", duration_s=10)

    threading.Thread(target=outage_soon, daemon=True).start()
    summary = drain(bootstrap_servers, topics, service.url, "g-outage", "--batch_size=2")
    assert service.stats()["rejected"]["outage"] > 0                 # the outage really happened
    out_ids = {json.loads(m.value)["txn_id"] for m in consume_all(bootstrap_servers, topics["out"], timeout=60)}
    assert out_ids == set(produced.txn_ids)
    assert consume_all(bootstrap_servers, topics["dlq"], timeout=10) == []
    assert summary.counter("score_dead_letters") == 0


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.enrich_payments", *args],
                          capture_output=True, text=True, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_help_lists_every_option_with_its_default() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    for flag in ("--bootstrap_servers", "--input_topic", "--output_topic", "--dlq_topic", "--group_id",
                 "--batch_size", "--max_batch_bytes", "--max_batch_wait", "--num_shards", "--max_in_flight",
                 "--contract", "--service_url", "--probe_timeout", "--max_records", "--retry_budget_ratio",
                 "--max_dead_letter_share", "--breaker_window", "--summary_path"):
        assert flag in proc.stdout
    assert "(default: 20)" in proc.stdout and "(default: 127.0.0.1:9092)" in proc.stdout
    assert "--sdk_location" not in proc.stdout and "--help_beam" in proc.stdout   # Beam's hundreds behind a flag
    everything = cli("--help_beam")
    assert everything.returncode == 0 and "--sdk_location" in everything.stdout and "--group_id" in everything.stdout


@pytest.mark.parametrize("args, message", [
    (["--batch_size=0"], "--batch_size must be > 0"),
    (["--service_url=ftp:/nowhere"], "--service_url must be an http(s) URL"),
    (["--max_in_flight=4"], "--max_in_flight (4) must be >= --num_shards (8)"),
    (["--batch_deadline=0"], "--batch_deadline must be > 0"),
    (["--contract=/no/such/contract.yaml"], "cannot read contract /no/such/contract.yaml"),
    (["--no_such_flag=1"], "unknown option(s): --no_such_flag (see --help)"),
    (["--bootstrap_servers=127.0.0.1:1"], "not reachable within 10 s"),
])
def test_bad_configuration_fails_fast_with_one_line(args, message) -> None:
    proc = cli(FNAPI, *args, timeout=30)
    assert proc.returncode == 2
    assert error_lines(proc) == [error_lines(proc)[-1]] and message in proc.stderr


def test_missing_topic_and_dead_service_fail_fast(bootstrap_servers, topics) -> None:
    proc = cli(FNAPI, f"--bootstrap_servers={bootstrap_servers}", "--input_topic=no-such-topic")
    assert proc.returncode == 2 and "topic(s) missing" in proc.stderr and "no-such-topic" in proc.stderr
    proc = cli(FNAPI, f"--bootstrap_servers={bootstrap_servers}", f"--input_topic={topics['in']}",
               f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}", "--service_url=http://127.0.0.1:9/score",
               "--probe_timeout=3")
    assert proc.returncode == 2
    assert "no usable answer from http://127.0.0.1:9/score to the start-up probe within 3 s" in proc.stderr
