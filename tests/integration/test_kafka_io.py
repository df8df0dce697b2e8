"""Pure-Python Kafka I/O against the real local broker, on the pinned FnApiRunner.

Pass-through drains (Kafka -> Kafka) check exactly-once output per drain,
commits only after delivery, `max_records`, offset gaps and backpressure; the
unbounded read is driven directly (FnApiRunner cannot finish an unbounded SDF).
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.io.restriction_trackers import OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.utils.timestamp import Duration, Timestamp
from confluent_kafka import Producer

import transforms.kafka.read as kafka_read
from testbed.kafka_admin import committed_offsets, consume_all, create_topic, delete_topic, end_offsets, topic_exists
from transforms.kafka.commit import CommitOffsets
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.read import (
    UNBOUNDED_STOP,
    ReadFromKafka,
    ReadSettings,
    _PartitionRestrictions,
    _ReadUnboundedPartitionFn,
)
from transforms.kafka.records import KafkaRecord, OutboundRecord, PartitionSpec
from transforms.kafka.write import WriteToKafka

pytestmark = pytest.mark.integration

FN_API_RUNNER = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"
N = 5000
PARTITIONS = 4


def produce(bootstrap: str, topic: str, n: int, partitions: int = PARTITIONS,
            base_ms: int | None = None) -> list[bytes]:
    """Values `0..n-1`, value i on partition i % partitions, timestamp `base_ms + i`.

    Timestamps must be recent: the broker's time retention (7 days) deletes
    older records, which the reader then rightly skips as out of range.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    base_ms = int(time.time() * 1000) if base_ms is None else base_ms
    values = [str(i).encode() for i in range(n)]
    for i, value in enumerate(values):
        producer.produce(topic, key=value, value=value, partition=i % partitions,
                         timestamp=base_ms + i)
        producer.poll(0)
    assert producer.flush(30) == 0
    return values


def pass_through(record: KafkaRecord, topic: str) -> OutboundRecord:
    return OutboundRecord(topic, record.key, record.value or b"", record.position)


def drain(conn: KafkaConnection, source: str, sink: str, max_records: int | None = None,
          settings: ReadSettings = ReadSettings(), to_outbound=pass_through) -> dict[str, int]:
    """Kafka -> Kafka pass-through drain; returns the counters by `namespace/name`."""
    pipeline = beam.Pipeline(options=PipelineOptions([FN_API_RUNNER]))
    _ = (pipeline
         | ReadFromKafka(conn, source, bounded=True, max_records=max_records, settings=settings)
         | beam.Map(to_outbound, sink)
         | WriteToKafka(conn)
         | CommitOffsets(conn))
    result = pipeline.run()
    result.wait_until_finish()
    counters: dict[str, int] = Counter()
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        counters[f"{counter.key.metric.namespace}/{counter.key.metric.name}"] += counter.committed
    return counters


@pytest.fixture
def conn(bootstrap_servers: str) -> KafkaConnection:
    return KafkaConnection(bootstrap_servers, group_id=f"g-{uuid.uuid4().hex[:12]}")


def values_of(bootstrap: str, topic: str) -> Counter:
    return Counter(r.value for r in consume_all(bootstrap, topic))


def test_drain_writes_every_record_once_and_commits_the_end_offsets(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection) -> None:
    source, sink = kafka_topic(PARTITIONS, "in"), kafka_topic(PARTITIONS, "out")
    sent = produce(bootstrap_servers, source, N)

    counters = drain(conn, source, sink)

    assert values_of(bootstrap_servers, sink) == Counter(sent)
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == \
        end_offsets(bootstrap_servers, source)
    assert counters["kafka_read/records"] == N
    assert counters["kafka_write/records"] == N
    assert counters["kafka_write/delivery_errors"] == 0

    again = drain(conn, source, sink)
    assert again["kafka_read/records"] == 0
    assert sum(values_of(bootstrap_servers, sink).values()) == N


def test_max_records_caps_the_read_and_commits_only_what_was_read(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection) -> None:
    source, sink = kafka_topic(PARTITIONS, "in"), kafka_topic(PARTITIONS, "out")
    sent = produce(bootstrap_servers, source, N)

    counters = drain(conn, source, sink, max_records=1500)

    # Partitions are filled in order: all 1250 of p0, then 250 of p1.
    assert counters["kafka_read/records"] == 1500
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == \
        {0: 1250, 1: 250, 2: 0, 3: 0}
    expected = [v for i, v in enumerate(sent) if i % 4 == 0 or (i % 4 == 1 and i < 4 * 250)]
    assert values_of(bootstrap_servers, sink) == Counter(expected)

    drain(conn, source, sink)
    assert values_of(bootstrap_servers, sink) == Counter(sent)
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == \
        end_offsets(bootstrap_servers, source)


def test_long_drain_commits_at_every_reader_checkpoint(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection,
        caplog: pytest.LogCaptureFixture) -> None:
    """FnApiRunner ends a bundle at each self-checkpoint and then runs the finalizer."""
    source, sink = kafka_topic(PARTITIONS, "in"), kafka_topic(PARTITIONS, "out")
    produce(bootstrap_servers, source, N)
    caplog.set_level(logging.DEBUG, logger="transforms.kafka.commit")

    drain(conn, source, sink, settings=ReadSettings(max_records_per_call=250))

    commits = [r.getMessage() for r in caplog.records
               if r.name == "transforms.kafka.commit" and r.getMessage().startswith("committed ")]
    history: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    for line in commits:  # "committed t/0@250, t/1@250, ..."
        for item in line[len("committed "):].split(", "):
            partition, offset = item.rsplit("/", 1)[1].split("@")
            history[int(partition)].append(int(offset))
    # At most 250 records per partition per bundle: >= 5 commits each, only forwards.
    for offsets in history.values():
        assert len(offsets) >= 5 and offsets == sorted(set(offsets)), history
        assert offsets[-1] == 1250 and all(o <= 250 * (i + 1) for i, o in enumerate(offsets))
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == \
        end_offsets(bootstrap_servers, source)


def test_missing_topic_is_a_clear_error(bootstrap_servers: str, conn: KafkaConnection) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(Exception, match=f"Kafka topic '{missing}' does not exist"):
        drain(conn, missing, "unused")
    assert not topic_exists(bootstrap_servers, missing)


def test_transaction_markers_inside_the_read_are_covered_by_the_commit(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection) -> None:
    source, sink = kafka_topic(1, "tx-in"), kafka_topic(1, "tx-out")
    producer = Producer({"bootstrap.servers": bootstrap_servers,
                         "transactional.id": f"tx-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    for txn in range(5):
        producer.begin_transaction()
        for i in range(20):
            producer.produce(source, value=b"%d" % (txn * 20 + i))
        producer.commit_transaction(30)
    assert end_offsets(bootstrap_servers, source) == {0: 105}  # 100 records + 5 markers

    counters = drain(conn, source, sink)

    assert counters["kafka_read/skipped_offsets"] == 4
    assert values_of(bootstrap_servers, sink) == Counter(b"%d" % i for i in range(100))
    # The four inner markers are covered (covers_from); the trailing one has no record
    # after it, so the committed offset stops right after the last record.
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == {0: 104}
    assert drain(conn, source, sink)["kafka_read/records"] == 0


def test_full_producer_queue_is_backpressure_not_loss(
        bootstrap_servers: str, kafka_topic) -> None:
    source, sink = kafka_topic(PARTITIONS, "in"), kafka_topic(PARTITIONS, "out")
    sent = produce(bootstrap_servers, source, 1000)
    tiny = KafkaConnection(bootstrap_servers, group_id=f"g-{uuid.uuid4().hex[:12]}",
                           queue_buffering_max_messages=10)

    counters = drain(tiny, source, sink)

    assert counters["kafka_write/records"] == 1000, counters
    assert values_of(bootstrap_servers, sink) == Counter(sent)
    assert committed_offsets(bootstrap_servers, tiny.group_id, source) == \
        end_offsets(bootstrap_servers, source)


def test_delivery_failure_fails_the_drain_and_commits_nothing(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection) -> None:
    source = kafka_topic(PARTITIONS, "in")
    sink = f"small-{uuid.uuid4().hex[:12]}"
    create_topic(bootstrap_servers, sink, 1, config={"max.message.bytes": "512"})
    try:
        produce(bootstrap_servers, source, 400)

        def oversize_one(record: KafkaRecord, topic: str) -> OutboundRecord:
            out = pass_through(record, topic)
            return OutboundRecord(topic, out.key, out.value * 1000, out.source) \
                if record.value == b"201" else out

        with pytest.raises(Exception, match="Kafka delivery failure"):
            drain(conn, source, sink, to_outbound=oversize_one)
        # The bundle failed, so no finalizer ran: only the planner's start offsets exist.
        assert committed_offsets(bootstrap_servers, conn.group_id, source) == \
            {p: 0 for p in range(PARTITIONS)}
    finally:
        delete_topic(bootstrap_servers, sink, wait=False)


def test_reader_consumers_use_the_memory_caps(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict] = []
    real_consumer = kafka_read.Consumer

    def recording_consumer(config: dict):
        seen.append(dict(config))
        return real_consumer(config)

    monkeypatch.setattr(kafka_read, "Consumer", recording_consumer)
    source, sink = kafka_topic(PARTITIONS, "in"), kafka_topic(PARTITIONS, "out")
    produce(bootstrap_servers, source, 100)

    drain(conn, source, sink)

    assert len(seen) == 1 + PARTITIONS  # the planner + one per partition
    for config in seen:
        assert config["queued.max.messages.kbytes"] == 2048
        assert config["queued.min.messages"] == 1000
        assert config["max.partition.fetch.bytes"] == 1024 * 1024
        assert config["fetch.max.bytes"] == 2 * 1024 * 1024
        assert config["enable.auto.commit"] is False
        assert config["enable.auto.offset.store"] is False


def test_unbounded_read_checkpoints_idles_with_a_delay_and_advances_the_watermark(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection) -> None:
    """The streaming path, driven like a runner would: process, checkpoint, resume."""
    topic = kafka_topic(1, "stream")
    base_ms = int(time.time() * 1000) - 60_000
    produce(bootstrap_servers, topic, 30, partitions=1, base_ms=base_ms)
    settings = ReadSettings(max_records_per_call=20, resume_delay_s=0.25, watermark_slack_s=1.0)
    fn = _ReadUnboundedPartitionFn(conn, settings)
    provider = _PartitionRestrictions()
    spec = PartitionSpec(topic, 0, 0, UNBOUNDED_STOP)
    fn.setup()
    try:
        def resume(restriction):
            tracker = ThreadsafeRestrictionTracker(OffsetRestrictionTracker(restriction))
            estimator = ManualWatermarkEstimator(None)
            out = list(fn.process(spec, watermark_estimator=estimator,
                                  tracker=RestrictionTrackerView(tracker)))
            residual, delay = tracker.deferred_status()
            return out, estimator.current_watermark(), residual, delay

        first, watermark, residual, delay = resume(provider.initial_restriction(spec))
        assert [r.value.position.offset for r in first] == list(range(20))
        assert first[5].timestamp == Timestamp(micros=(base_ms + 5) * 1000)
        assert (residual.start, residual.stop, delay) == (20, UNBOUNDED_STOP, Duration(0))
        assert watermark == first[-1].timestamp - Duration(1.0)

        second, watermark, residual, delay = resume(residual)
        assert [r.value.position.offset for r in second] == list(range(20, 30))
        assert second[0].value.position.covers_from == 20
        assert residual.start == 30
        assert Duration(0.2) < delay <= Duration(0.25)  # caught up: resume later
        assert watermark >= Timestamp.now() - Duration(5)  # idle: tracks wall time

        idle, _, residual, _ = resume(residual)
        assert idle == [] and residual.start == 30
        assert provider.restriction_size(spec, residual) == 0  # no backlog
        assert provider.truncate(spec, residual) is None  # a drain stops the read
    finally:
        fn.teardown()

