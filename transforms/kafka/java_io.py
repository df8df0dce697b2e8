"""Beam's Java KafkaIO (cross-language) adapted to this pipeline's element types (`--kafka_io=java`).

Runs on Flink only, without Docker: the expansion service is started with
`--defaultEnvironmentType=EMBEDDED`, so the Java transforms run inside the Flink
JVM, whose job-server jar must carry KafkaIO (testbed/kafka/expansion.py).

Offsets are still committed by `CommitOffsets`, from acks, never by KafkaIO
(`commit_offset_in_finalize` would commit what was *read* before a checkpoint,
including events that sit in an open scoring batch in state: a relaunch from
the committed offsets would lose them):
- `ReadFromKafkaJava` yields one-record `RecordBatch`es whose ack range is the record's own
  offset (`covers_from = offset`: the Java reader does not tell the previous
  offset), so the committed prefix cannot advance over offset gaps (transaction
  markers, compaction): such topics are re-read from the gap, never skipped.
- `WriteToKafkaJava` writes `OutboundRecord`s with KafkaIO and returns acks
  taken from the records *on their way* to the Java writer. They are not yet
  delivered; they become true after the next completed checkpoint, because with
  `--finish_bundle_before_checkpointing` every Flink operator finishes its bundle
  (KafkaIO's writer flushes and fails on any send error) before it snapshots,
  and the ack and its record precede the same barrier. So these acks are only
  for `CommitOffsets(after_checkpoint=True)`, i.e. Flink streaming; drains use
  the pure-Python writer, whose acks are delivery callbacks.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import apache_beam as beam
from apache_beam.io import kafka as beam_kafka
from apache_beam.transforms.external import JavaJarExpansionService
from apache_beam.transforms.window import TimestampedValue

from transforms.kafka.connection import KafkaConnection
from transforms.kafka.read import _PlanPartitions  # the planner's start-offset rule, shared on purpose
from transforms.kafka.records import KafkaRecord, OffsetAck, OutboundRecord, PartitionSpec, RecordBatch, SourcePosition
from transforms.kafka.start import StartPosition
from transforms.windowing import event_time

ExpansionService = str | JavaJarExpansionService

# Settings whose librdkafka name and meaning are the same for the Java clients.
_PORTABLE_KEYS = frozenset({"security.protocol", "sasl.mechanism"})


class UnsupportedJavaSetting(ValueError):
    """A Kafka setting that means something else (or nothing) to the Java clients."""


def expansion_service(target: str) -> ExpansionService:
    """`host:port` of a running expansion service, or the path of its jar (started EMBEDDED)."""
    if target.endswith(".jar"):
        return JavaJarExpansionService(target, extra_args=["{{PORT}}", "--defaultEnvironmentType=EMBEDDED"])
    return target


def _java_common(conn: KafkaConnection) -> dict[str, str]:
    settings = {**conn.security, **conn.properties}
    settings = {("sasl.mechanism" if k == "sasl.mechanisms" else k): v for k, v in settings.items()}
    unsupported = sorted(set(settings) - _PORTABLE_KEYS)
    if unsupported:
        raise UnsupportedJavaSetting(
            f"--kafka_io=java cannot pass {', '.join(unsupported)} to the Java clients (librdkafka names; "
            f"only {', '.join(sorted(_PORTABLE_KEYS))} carry over): use --kafka_io=python")
    return {"bootstrap.servers": conn.bootstrap_servers, **settings}


def java_consumer_config(conn: KafkaConnection) -> dict[str, str]:
    """Start at the group's committed offsets (earliest if none); never commit by itself."""
    return {**_java_common(conn), "group.id": conn.require_group(), "auto.offset.reset": "earliest",
            "enable.auto.commit": "false"}


def java_producer_config(conn: KafkaConnection) -> dict[str, str]:
    return {**_java_common(conn), "acks": "all", "enable.idempotence": "true"}


def commit_start_offsets(conn: KafkaConnection, topic: str, start: StartPosition | None = None) -> list[PartitionSpec]:
    """Before a run, in the launcher: give every partition a committed offset (the Python
    reader's rule: `start` when none, the earliest offset when out of range) so KafkaIO starts
    there and `CommitOffsets` has a base. Returns each partition's `[committed, end)`."""
    return list(_PlanPartitions(conn, topic, bounded=True, max_records=None, start=start).process(b""))


def to_record_batch(row) -> TimestampedValue:
    """A KafkaIO metadata row as a `RecordBatch` of its one `KafkaRecord` (KafkaIO hands Python one
    record per element), timestamped like the Python reader's."""
    position = SourcePosition(row.topic, row.partition, row.offset, row.offset)
    timestamp = event_time(row.timestamp)
    return TimestampedValue([KafkaRecord(position, row.key, row.value, timestamp.micros // 1000)], timestamp)


class ReadFromKafkaJava(beam.PTransform):
    """Read one topic with KafkaIO from the group's committed offsets; output a `RecordBatch` per record.

    `max_records` makes it bounded (a drain): KafkaIO reads that many records and
    stops. The group must have committed offsets (`commit_start_offsets`), which
    is also the base `CommitOffsets` advances from.
    """

    def __init__(self, connection: KafkaConnection, topic: str, service: ExpansionService, *,
                 max_records: int | None = None) -> None:
        super().__init__()
        self._config = java_consumer_config(connection)
        self._topic, self._service, self._max_records = topic, service, max_records

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "KafkaIO" >> beam_kafka.ReadFromKafka(
                    self._config, [self._topic], max_num_records=self._max_records, with_metadata=True,
                    expansion_service=self._service)
                | "ToRecordBatch" >> beam.Map(to_record_batch).with_output_types(RecordBatch))


def _key_value(record: OutboundRecord) -> tuple[bytes, bytes]:
    # KafkaIO's byte-array coder has no null: a record without key gets an empty one.
    return record.key or b"", record.value


def _ack(topics: frozenset[str], record: OutboundRecord) -> OffsetAck:
    if record.topic not in topics:  # it was written by no writer: acking it would lose it
        raise ValueError(f"record for topic {record.topic!r}, but WriteToKafkaJava writes only {sorted(topics)}")
    return OffsetAck(record.source.topic, record.source.partition, (record.source.covered,))


class WriteToKafkaJava(beam.PTransform):
    """Write `OutboundRecord`s with KafkaIO (one writer per topic); output acks valid after a checkpoint."""

    def __init__(self, connection: KafkaConnection, topics: Sequence[str], service: ExpansionService) -> None:
        super().__init__()
        self._config: Mapping[str, str] = java_producer_config(connection)
        self._topics, self._service = list(dict.fromkeys(topics)), service

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        for topic in self._topics:
            (records
             | f"For {topic}" >> beam.Filter(lambda r, t=topic: r.topic == t)
             | f"KeyValue {topic}" >> beam.Map(_key_value).with_output_types(tuple[bytes, bytes])
             | f"KafkaIO {topic}" >> beam_kafka.WriteToKafka(dict(self._config), topic,
                                                             expansion_service=self._service))
        return records | "AckOnCheckpoint" >> beam.Map(
            functools.partial(_ack, frozenset(self._topics))).with_output_types(OffsetAck)
