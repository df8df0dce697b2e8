"""`--kafka_io=java` (Beam's KafkaIO, cross-language, EMBEDDED in the Flink JVM) against the real broker
and scoring service: a drain accounts for every event, and a streaming stop/restart loses nothing."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipelines.enrich_payments import launch, run
from testbed.kafka.admin import committed_offsets, consume_all, end_offsets
from testbed.kafka.expansion import KafkaJars
from testbed.kafka.produce import produce_events
from tests.integration.test_drain_other_runners import assert_drained, job_args
from tests.integration.test_flink_streaming import BATCH_SIZE, CHECKPOINT_MS, MAX_IN_FLIGHT, streaming_args, wait_for_outputs

pytestmark = [pytest.mark.integration, pytest.mark.flink]


def java_args(jars: KafkaJars) -> list[str]:
    return ["--kafka_io=java", f"--kafka_expansion_service={jars.expansion_service}"]


@pytest.fixture
def topics(kafka_topic) -> dict[str, str]:
    return {"in": kafka_topic(partitions=2, prefix="jin"), "out": kafka_topic(partitions=2, prefix="jout"),
            "dlq": kafka_topic(partitions=1, prefix="jdlq")}


def test_drain_with_kafka_io_accounts_for_every_event(kafka_java_jars, bootstrap_servers, topics,
                                                      scoring_service) -> None:
    produced = produce_events(bootstrap_servers, topics["in"], count=2_000, malformed_fraction=0.01, seed=41)
    group = "g-java-drain"
    started = time.monotonic()
    summary = run(["--runner=FlinkRunner", f"--flink_job_server_jar={kafka_java_jars.job_server}",
                   "--flink_master=[local]", "--flink_version=1.19", "--environment_type=LOOPBACK",
                   "--parallelism=1", "--drain_chunk=1500", *java_args(kafka_java_jars),   # two runs
                   *job_args(bootstrap_servers, topics, scoring_service.url, group)])
    print(f"java drain of 2,000 events: {time.monotonic() - started:.1f} s")
    assert produced.malformed > 0
    assert_drained(bootstrap_servers, topics, group, produced)
    assert summary.wall_s > 0


def test_streaming_stop_and_restart_with_kafka_io_loses_nothing(kafka_java_jars, bootstrap_servers, topics,
                                                                scoring_service) -> None:
    group = "g-java-restart"
    args = [*streaming_args(str(kafka_java_jars.job_server), bootstrap_servers, topics, scoring_service.url, group),
            *java_args(kafka_java_jars)]
    first = launch(args)
    try:
        produced = produce_events(bootstrap_servers, topics["in"], count=3_000, rate_per_s=300, seed=42)
        wait_for_outputs(bootstrap_servers, topics, group, 1_000, timeout_s=300)
    finally:
        first.cancel()
    second = launch(args)
    try:
        out_ids = wait_for_outputs(bootstrap_servers, topics, group, 3_000, timeout_s=300)
        deadline = time.monotonic() + 60   # the tail is committed after the next checkpoint
        while committed_offsets(bootstrap_servers, group, topics["in"]) != end_offsets(bootstrap_servers, topics["in"]):
            assert time.monotonic() < deadline, "offsets were not committed after the outputs were written"
            time.sleep(1)
    finally:
        second.cancel()
    assert set(out_ids) == set(produced.txn_ids)
    assert not consume_all(bootstrap_servers, topics["dlq"], timeout=30)
    duplicates = len(out_ids) - len(set(out_ids))
    bound = 2 * MAX_IN_FLIGHT * BATCH_SIZE + 2 * (CHECKPOINT_MS / 1000) * 300
    print(f"java streaming: duplicates after restart: {duplicates} (bound {bound:.0f})")
    assert duplicates <= bound


def refusal(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pipelines.enrich_payments", "--kafka_io=java", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_kafka_io_java_is_refused_off_flink(kafka_java_jars) -> None:
    last = refusal("--runner=DirectRunner", f"--kafka_expansion_service={kafka_java_jars.expansion_service}")
    assert last.startswith("error: --kafka_io=java needs FlinkRunner")


def test_kafka_io_java_is_refused_with_a_job_server_jar_without_kafka_io(kafka_java_jars,
                                                                         flink_job_server_jar) -> None:
    last = refusal("--runner=FlinkRunner", f"--flink_job_server_jar={flink_job_server_jar}",
                   f"--kafka_expansion_service={kafka_java_jars.expansion_service}")
    assert last.startswith("error: --kafka_io=java needs a job-server jar with KafkaIO")
