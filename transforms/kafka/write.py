"""Pure-Python Kafka sink that reports which source offsets are safe to commit.

Results and dead letters go through the same writer (each `OutboundRecord`
names its topic). Output: `OffsetAck`s for the *source* partitions, built only
from records the broker acknowledged (acks=all, idempotent producer), so
`CommitOffsets` can never commit past an output that was not written.
Assumes one `OutboundRecord` per input record (its `source.covered` range is
acknowledged once that record is delivered). An `OffsetGap` (offsets without a
record, from the reader) has nothing to deliver and is acknowledged with the
bundle's records.

Acks are emitted at the end of the bundle, after `flush()` has waited out
every record of it: if nothing is left queued and no failure was reported,
every record the bundle produced is on the broker, so the bundle's sources are
acknowledged together and a delivery report only has to notice failures (a
callback that bookkept each delivered record was a third of a pass-through's
CPU); any failure fails the bundle instead (the runner retries it). Reports
stay on for every record: with `delivery.report.only.error` the scoring
benchmark's latency x10 phase fell from 0.80-0.93 of capacity (4 runs) to 0.64-0.70 (3 runs)
(cause not found).

A bounded run's bundle can be a whole drain run (the FnApiRunner's), so with
`commit_every_s` the writer flushes that often and commits the delivered prefix
itself (`commit.DeliveredPrefix`); the acks still go to `CommitOffsets`.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from transforms.kafka.commit import DeliveredPrefix
from transforms.kafka.connection import KafkaConnection, producer_config
from transforms.kafka.offset_ranges import PendingRanges
from transforms.kafka.records import OffsetAck, OffsetGap, OutboundRecord, SourcePosition
from transforms.monitoring import metrics
from transforms.monitoring.services import NO_SERVICES, WorkerServices
from transforms.windowing import in_global_window

_LOG = logging.getLogger(__name__)

Encoder = Callable[[Any], OutboundRecord | OffsetGap]

_BACKPRESSURE_POLL_S = 0.05
_POLL_EVERY = 256

_RECORDS_WRITTEN = metrics.counter("records_written")
_BYTES_WRITTEN = metrics.counter("bytes_written")
_DELIVERY_ERRORS = metrics.counter("delivery_errors")


class KafkaWriteError(RuntimeError):
    """Records were not delivered; the bundle fails and the runner retries it."""


class _WriteFn(beam.DoFn):
    """Produces records; emits acks for delivered ones, coalesced per source partition."""

    def __init__(self, conn: KafkaConnection, flush_timeout_s: float, encode: Encoder | None,
                 commit_every_s: float | None, services: WorkerServices) -> None:
        self._conn = conn
        self._services = services
        self._flush_timeout_s = flush_timeout_s
        self._encode = encode
        self._commit_every_s = commit_every_s
        self._commits: DeliveredPrefix | None = None
        self._next_commit = 0.0
        self._producer: Producer | None = None
        # Bumped per bundle: failure reports of an abandoned bundle are ignored.
        self._generation = 0
        self._on_failure: Callable[[KafkaError | None, Message], None] | None = None   # per bundle
        self._sent: dict[tuple[str, int], PendingRanges] = {}
        self._failures: list[str] = []
        self._acked_records = 0
        self._acked_bytes = 0
        self._delivery_errors = 0
        self._since_poll = 0

    def setup(self) -> None:
        self._services.start()
        if self._commit_every_s:
            self._commits = DeliveredPrefix(self._conn)

    def start_bundle(self) -> None:
        if self._producer is None:
            self._producer = Producer(producer_config(self._conn))
        if self._commit_every_s:
            self._next_commit = time.monotonic() + self._commit_every_s
        self._generation += 1
        self._on_failure = functools.partial(self._report, self._generation)
        self._sent = {}
        self._failures = []
        self._acked_records = self._acked_bytes = self._delivery_errors = 0
        self._since_poll = 0

    def process(self, element: Any) -> Iterable[OffsetAck]:
        if element.__class__ is list:   # a batch-shaped step's list (the Kafka job's)
            for item in element:
                self._write(item)
        else:
            self._write(element)
        return ()

    def _write(self, element: Any) -> None:
        assert self._producer is not None
        record: OutboundRecord | OffsetGap = self._encode(element) if self._encode else element
        if isinstance(record, OffsetGap):
            self._sent_source(record.source)   # nothing to deliver: acknowledged with the bundle's records
            return
        while True:
            try:
                self._producer.produce(record.topic, value=record.value, key=record.key,
                                       on_delivery=self._on_failure)
                break
            except BufferError:
                # Local queue full: wait for deliveries (backpressure, not loss).
                self._producer.poll(_BACKPRESSURE_POLL_S)
            except KafkaException as exc:  # e.g. a record over message.max.bytes
                raise KafkaWriteError(f"produce to {record.topic} failed: {exc}") from exc
        self._sent_source(record.source)
        self._since_poll += 1
        if self._since_poll >= _POLL_EVERY:
            # Serve delivery reports now and then, not per record.
            self._since_poll = 0
            self._producer.poll(0)
            self._raise_on_failures()
            self._count_acked()
            if self._commits is not None and time.monotonic() >= self._next_commit:
                self._commit_delivered()   # looked at with the polls, not per record

    def _commit_delivered(self) -> None:
        """Waits out what is queued, then commits the delivered prefix (`DeliveredPrefix`)."""
        assert self._producer is not None and self._commits is not None
        if self._producer.flush(self._flush_timeout_s):
            self._failures.append(f"records still queued after {self._flush_timeout_s:g} s flush")
        self._raise_on_failures()
        self._commits.delivered({key: ranges.merged() for key, ranges in self._sent.items()})
        self._next_commit = time.monotonic() + (self._commit_every_s or 0.0)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        """Waits for every delivery, then acknowledges the bundle's sources in one ack per partition
        (the committer commits at the end of the bundle anyway)."""
        assert self._producer is not None
        undelivered = self._producer.flush(self._flush_timeout_s)
        if undelivered:
            self._failures.append(f"{undelivered} record(s) still queued after "
                                  f"{self._flush_timeout_s:g} s flush")
        self._raise_on_failures()
        # Nothing queued, nothing failed: every record of the bundle is delivered.
        self._count_acked()
        delivered, self._sent = self._sent, {}
        for (topic, partition), ranges in delivered.items():
            # Stamped now: the acks only travel on to the committer, in the global window.
            yield in_global_window(OffsetAck(topic, partition, ranges.merged().ranges), Timestamp.now())

    def teardown(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._flush_timeout_s)
            self._producer = None
        if self._commits is not None:
            self._commits.close()
            self._commits = None

    def _count_acked(self) -> None:
        """Records acknowledged so far count as written now, not when the bundle ends (a drain's
        bundle can last minutes); on the bundle thread, so Beam records them too."""
        _RECORDS_WRITTEN.inc(self._acked_records)
        _BYTES_WRITTEN.inc(self._acked_bytes)
        self._acked_records = self._acked_bytes = 0

    def _report(self, generation: int, err: KafkaError | None, msg: Message) -> None:
        """Counts a delivery or notes a failed one; runs inside poll() and flush()."""
        if generation != self._generation:
            return
        if err is None:
            self._acked_records += 1
            self._acked_bytes += len(msg) + len(msg.key() or b"")
            return
        self._delivery_errors += 1
        self._failures.append(f"{msg.topic()}: {err.name()}: {err.str()}")

    def _sent_source(self, source: SourcePosition) -> None:
        key = (source.topic, source.partition)
        ranges = self._sent.get(key)
        if ranges is None:
            ranges = self._sent[key] = PendingRanges()
        ranges.add(*source.covered)

    def _raise_on_failures(self) -> None:
        if not self._failures:
            return
        failures, self._failures = self._failures, []
        _DELIVERY_ERRORS.inc(self._delivery_errors)
        self._delivery_errors = 0
        # Drop the producer: an idempotent producer may be in a fatal state,
        # and queued records of the failed bundle must not be acked later.
        assert self._producer is not None
        self._generation += 1
        self._producer.purge()
        self._producer.flush(0)
        self._producer = None
        raise KafkaWriteError(
            f"{len(failures)} Kafka delivery failure(s); first: {failures[0]}")


class WriteToKafka(beam.PTransform):
    """Write `OutboundRecord`s (and acknowledge `OffsetGap`s), or lists of them; output
    `OffsetAck`s of their delivered sources.

    Acks emitted by `finish_bundle` are in the global window; `CommitOffsets`
    re-windows all acks into the global window anyway. `encode` turns each
    element into its record in the writer itself (one step per event fewer than
    a Map in front of it); a list element is encoded and written item by item.
    """

    def __init__(self, connection: KafkaConnection, *, flush_timeout_s: float = 60.0,
                 encode: Encoder | None = None, commit_every_s: float | None = None,
                 services: WorkerServices = NO_SERVICES) -> None:
        """`commit_every_s` (bounded runs only): also commit the group's offsets of what is
        delivered that often (`DeliveredPrefix`); needs a group."""
        super().__init__()
        if commit_every_s:
            connection.require_group()
        self._conn = connection
        self._flush_timeout_s = flush_timeout_s
        self._encode = encode
        self._commit_every_s = commit_every_s
        self._services = services

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "Produce" >> beam.ParDo(
            _WriteFn(self._conn, self._flush_timeout_s, self._encode, self._commit_every_s, self._services)
        ).with_output_types(OffsetAck)
