"""`python -m pipelines.status` against the real broker: a known lag, then draining and stalled."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipelines.status import DRAINING, EXIT_NO_TOPIC, EXIT_OK, IDLE, STALLED, main, sample_twice
from testbed.kafka.admin import committed_offsets, consume_all, end_offsets
from testbed.kafka.produce import produce_events
from transforms.kafka.connection import KafkaConnection, with_retries
from transforms.kafka.lag import LagProbe

pytestmark = pytest.mark.integration


def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commits as a group member that never joins (like the job's committer)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        with_retries(lambda: consumer.commit(offsets=tps, asynchronous=False))  # a fresh broker: NOT_COORDINATOR
    finally:
        consumer.close()


@pytest.fixture
def backlog(bootstrap_servers, kafka_topic):
    """3 partitions: p0 half committed, p1 nothing committed, p2 fully committed."""
    topic = kafka_topic(partitions=3, prefix="status")
    produce_events(bootstrap_servers, topic, count=600, seed=3)
    ends = end_offsets(bootstrap_servers, topic)
    assert all(end > 10 for end in ends.values())
    group = f"g-status-{time.monotonic_ns()}"
    commit(bootstrap_servers, group, topic, {0: ends[0] // 2, 2: ends[2]})
    assert committed_offsets(bootstrap_servers, group, topic) == {0: ends[0] // 2, 1: None, 2: ends[2]}
    stamps = {(r.partition, r.offset): r.timestamp for r in consume_all(bootstrap_servers, topic)}
    return topic, group, ends, stamps


def test_known_lag_ages_and_stalled_verdict(bootstrap_servers, backlog) -> None:
    topic, group, ends, stamps = backlog
    probe = LagProbe(KafkaConnection(bootstrap_servers, group_id=group), topic)
    try:
        before = time.time()
        statuses = {s.partition: s for s in sample_twice(probe, 0.5, sleep=lambda s: None)}
        after = time.time()
    finally:
        probe.close()
    p0, p1, p2 = statuses[0], statuses[1], statuses[2]
    assert (p0.lag, p1.lag, p2.lag) == (ends[0] - ends[0] // 2, ends[1], 0)
    assert (p0.verdict, p1.verdict, p2.verdict) == (STALLED, STALLED, IDLE)
    assert p0.drain_per_s == 0 and p0.lag_change == 0
    for status, oldest in ((p0, stamps[(0, ends[0] // 2)]), (p1, stamps[(1, 0)])):
        assert before - oldest / 1000 <= status.oldest_age_s <= after - oldest / 1000
    assert p2.oldest_age_s == 0


def test_moving_the_committed_offset_between_samples_reads_as_draining(bootstrap_servers, backlog, capsys) -> None:
    topic, group, ends, _ = backlog
    moved = (ends[0] - ends[0] // 2) // 2
    code = main([f"--bootstrap_servers={bootstrap_servers}", f"--group_id={group}", f"--input_topic={topic}",
                 "--interval=2"], sleep=lambda s: commit(bootstrap_servers, group, topic, {0: ends[0] // 2 + moved}))
    out = capsys.readouterr().out.splitlines()
    assert code == EXIT_OK
    rows = {int(line.split()[0]): line.split() for line in out[1:-1]}
    assert rows[0][-1] == DRAINING and int(rows[0][4]) == -moved and float(rows[0][5]) == pytest.approx(moved / 2)
    assert rows[1][-1] == STALLED and rows[2][-1] == IDLE
    assert out[-1].endswith(f"-> {STALLED}")                     # the worst partition decides


def test_cli_subprocess_prints_the_table_and_fails_cleanly_on_a_missing_topic(bootstrap_servers, backlog) -> None:
    topic, group, ends, _ = backlog
    proc = subprocess.run([sys.executable, "-m", "pipelines.status", f"--bootstrap_servers={bootstrap_servers}",
                           f"--group_id={group}", f"--input_topic={topic}", "--interval=0.5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_OK, proc.stderr
    total = sum(ends.values()) - ends[0] // 2 - ends[2]
    assert f"lag {total}," in proc.stdout and proc.stdout.rstrip().endswith(STALLED)
    proc = subprocess.run([sys.executable, "-m", "pipelines.status", f"--bootstrap_servers={bootstrap_servers}",
                           f"--group_id={group}", "--input_topic=no-such-topic", "--interval=0.1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_NO_TOPIC
    assert proc.stderr.strip().splitlines() == ["error: topic 'no-such-topic' does not exist on "
                                                f"{bootstrap_servers}"]
