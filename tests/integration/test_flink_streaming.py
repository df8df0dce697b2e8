"""The same pipeline unbounded on Flink (embedded in Beam's job server), against the real
broker and scoring service: outputs while events arrive, commits only behind the writes,
clean cancel, and a stop/restart that loses nothing."""
from __future__ import annotations

import json
import time

import pytest
from apache_beam.runners.runner import PipelineState

from pipelines.enrich_payments import launch
from testbed.kafka.admin import add_partitions, committed_offsets, consume_all, end_offsets
from testbed.kafka.produce import produce_events

pytestmark = [pytest.mark.integration, pytest.mark.flink]

CHECKPOINT_MS = 2000
BATCH_SIZE = 10
MAX_IN_FLIGHT = 8


def streaming_args(jar: str, bootstrap: str, topics: dict[str, str], url: str, group: str) -> list[str]:
    return ["--runner=FlinkRunner", f"--flink_job_server_jar={jar}", "--flink_master=[local]",
            "--flink_version=1.19", "--environment_type=LOOPBACK", "--streaming",
            f"--checkpointing_interval={CHECKPOINT_MS}", "--parallelism=1",
            f"--bootstrap_servers={bootstrap}", f"--input_topic={topics['in']}",
            f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}", f"--group_id={group}",
            f"--service_url={url}/score", f"--batch_size={BATCH_SIZE}", "--max_batch_wait=0.5",
            f"--max_in_flight={MAX_IN_FLIGHT}", "--progress_interval=0"]


@pytest.fixture
def topics(kafka_topic) -> dict[str, str]:
    return {"in": kafka_topic(partitions=2, prefix="fin"), "out": kafka_topic(partitions=2, prefix="fout"),
            "dlq": kafka_topic(partitions=1, prefix="fdlq")}


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    return sum(o or 0 for o in committed_offsets(bootstrap, group, topic).values())


def wait_for_outputs(bootstrap: str, topics: dict[str, str], group: str, want: int, timeout_s: float) -> list[str]:
    """Polls until `want` outputs exist; checks on every poll that commits never run ahead of writes."""
    deadline = time.monotonic() + timeout_s
    while True:
        committed = committed_total(bootstrap, group, topics["in"])   # sampled before the outputs
        written = len(consume_all(bootstrap, topics["out"], timeout=60)) + \
            len(consume_all(bootstrap, topics["dlq"], timeout=60))
        assert committed <= written, f"committed {committed} offsets but only {written} outputs are written"
        if written >= want or time.monotonic() > deadline:
            return [json.loads(m.value)["txn_id"] for m in consume_all(bootstrap, topics["out"], timeout=60)]
        time.sleep(2)


def test_streaming_on_flink_scores_events_as_they_arrive(flink_job_server_jar, bootstrap_servers, topics,
                                                         scoring_service) -> None:
    group = "g-flink-stream"
    result = launch(streaming_args(flink_job_server_jar, bootstrap_servers, topics, scoring_service.url, group))
    try:
        produced = produce_events(bootstrap_servers, topics["in"], count=5_000, rate_per_s=500, seed=21)
        out_ids = wait_for_outputs(bootstrap_servers, topics, group, 5_000, timeout_s=300)
        assert sorted(out_ids) == sorted(produced.txn_ids)
        deadline = time.monotonic() + 60   # the last checkpoint commits the tail
        while (committed := committed_offsets(bootstrap_servers, group, topics["in"])) != \
                (end := end_offsets(bootstrap_servers, topics["in"])):
            assert time.monotonic() < deadline, \
                f"offsets were not committed after the outputs were written: committed {committed}, end {end}"
            time.sleep(1)
    finally:
        result.cancel()
    assert result.state == PipelineState.CANCELLED


def test_stop_and_restart_mid_stream_loses_nothing(flink_job_server_jar, bootstrap_servers, topics,
                                                   scoring_service) -> None:
    group = "g-flink-restart"
    args = streaming_args(flink_job_server_jar, bootstrap_servers, topics, scoring_service.url, group)
    first = launch(args)
    try:
        produced = produce_events(bootstrap_servers, topics["in"], count=3_000, rate_per_s=300, seed=22)
        wait_for_outputs(bootstrap_servers, topics, group, 1_000, timeout_s=300)
    finally:
        first.cancel()
    second = launch(args)
    try:
        out_ids = wait_for_outputs(bootstrap_servers, topics, group, 3_000, timeout_s=300)
    finally:
        second.cancel()
    assert set(out_ids) == set(produced.txn_ids)
    duplicates = len(out_ids) - len(set(out_ids))
    # Written but not yet committed when the first job stopped: the batches in flight plus
    # what arrived during one checkpoint interval (x2 for the interval in progress).
    bound = 2 * MAX_IN_FLIGHT * BATCH_SIZE + 2 * (CHECKPOINT_MS / 1000) * 300
    print(f"duplicates after restart: {duplicates} (bound {bound:.0f})")
    assert duplicates <= bound


def test_partitions_added_while_streaming_are_read_from_their_earliest_offset(
        flink_job_server_jar, bootstrap_servers, topics, scoring_service) -> None:
    """Before: planned once at start; a third partition's 300 events showed as lag and were never read."""
    group = "g-flink-discover"
    args = [*streaming_args(flink_job_server_jar, bootstrap_servers, topics, scoring_service.url, group),
            "--partition_discovery_interval=3"]
    result = launch(args)
    try:
        first = produce_events(bootstrap_servers, topics["in"], count=200, rate_per_s=200, seed=23)
        wait_for_outputs(bootstrap_servers, topics, group, 200, timeout_s=300)
        add_partitions(bootstrap_servers, topics["in"], 3)
        later = produce_events(bootstrap_servers, topics["in"], count=600, rate_per_s=300, seed=24)
        assert end_offsets(bootstrap_servers, topics["in"])[2] > 0, "no event landed on the new partition"
        out_ids = wait_for_outputs(bootstrap_servers, topics, group, 800, timeout_s=120)
        assert set(out_ids) == set(first.txn_ids) | set(later.txn_ids)
        deadline = time.monotonic() + 60
        while committed_offsets(bootstrap_servers, group, topics["in"]) != end_offsets(bootstrap_servers, topics["in"]):
            assert time.monotonic() < deadline, "the new partition's offsets were not committed"
            time.sleep(1)
    finally:
        result.cancel()
