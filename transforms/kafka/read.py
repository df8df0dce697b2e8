"""Pure-Python Kafka source: `Impulse` -> plan partitions -> splittable read.

No Java expansion service, so it runs on FnApiRunner, Prism and Flink alike.
The read is an SDF over each partition's offsets; it checkpoints itself every
`max_records_per_call` records so bundles stay bounded (which is also what
lets `CommitOffsets` commit during a long drain) and on an empty poll (so an
idle partition yields instead of blocking the bundle).

Each record carries `covers_from` = the reader's position before it, so the
acknowledged ranges also cover offset gaps (compaction, transaction markers,
aborted records). A gap that ends a read - behind the last record of a
partition or of a bounded range, or just below a split point - has no record
after it to carry it, so the reader emits an `OffsetGap` for it: otherwise the
committed offset would stop below it for good (a transactional partition
usually ends with a commit marker). Unbounded reads split with a growable
tracker (`tracker.py`).

The output is batch-shaped: one `RecordBatch` per poll of one partition (up to
`poll_batch` records, then the poll's gaps), not one element per record. Beam's
work per element - a few microseconds for each step a record passes - is then
paid per poll, and the steps downstream loop over plain lists.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from transforms.kafka.commit import GroupOffsets
from transforms.kafka.connection import KafkaConnection, consumer_config, with_retries
from transforms.kafka.records import KafkaRecord, OffsetGap, PartitionSpec, RecordBatch, SourcePosition
from transforms.kafka.start import StartPosition
from transforms.kafka.tracker import UNBOUNDED_STOP, GrowableOffsetRestrictionTracker, PartitionRange
from transforms.monitoring import metrics
from transforms.monitoring.services import NO_SERVICES, WorkerServices
from transforms.windowing import clamped_ms, event_time, in_global_window

_LOG = logging.getLogger(__name__)

_METADATA_TIMEOUT_S = 30.0

_RECORDS_READ = metrics.counter("records_read")
_BYTES_READ = metrics.counter("bytes_read")
_SKIPPED_OFFSETS = metrics.counter("skipped_offsets")
_CLAMPED_TIMESTAMPS = metrics.counter("clamped_timestamps")   # outside Beam's range (windowing.event_time)

# Errors after which retrying the poll cannot help: fail the bundle loudly.
_FATAL_CODES = frozenset({
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._SSL,
})


class KafkaReadError(RuntimeError):
    """A non-retriable consumer error, or a topic that does not exist."""


# Backlog estimate per (topic, partition) from the consumers' cached high
# watermarks; `restriction_size` and the tracker of an unbounded read use it
# (no broker call).
_HIGH_WATERMARKS: dict[tuple[str, int], int] = {}


@dataclass(frozen=True)
class ReadSettings:
    """Tuning of the partition reader (defaults suit tests and production)."""
    # Each call self-checkpoints after this many records (or max_call_seconds), which ends the
    # runner's bundle: the bundle's tail batches, the writer's flush and the commit then wait in
    # turn. At 2,000 those waits were a sixth of a fast drain's time; at 10,000, 3 %.
    max_records_per_call: int = 10_000
    max_call_seconds: float = 5.0
    poll_batch: int = 500
    poll_timeout_s: float = 0.5
    resume_delay_s: float = 0.5
    # The watermark trails the newest message timestamp (or now, when idle) by
    # this much, so mildly out-of-order producer timestamps are not late.
    watermark_slack_s: float = 5.0
    # Consumers a reader instance keeps open (each has its own threads, broker
    # connections and pre-fetch queue). More partitions than this share them:
    # the least recently read one is re-assigned, which costs one fetch.
    max_open_consumers: int = 8
    # Unbounded reads: how often a caught-up partition whose committed offset is where the reader
    # is re-commits it. The group never joins (assign() only), so the broker drops an offset
    # `offsets.retention.minutes` (7 days by default) after its last commit, and a partition idle
    # that long would start again from its earliest offset.
    offset_refresh_s: float = 3600.0
    # Unbounded reads: how often the topic's partitions are listed again, so partitions added
    # while the job runs are read too (Flink's KafkaSource: every 5 minutes). 0: planned once.
    partition_discovery_s: float = 300.0

    def __post_init__(self) -> None:
        if min(self.max_records_per_call, self.poll_batch, self.max_open_consumers) < 1:
            raise ValueError("max_records_per_call, poll_batch and max_open_consumers must be >= 1")


def plan_stops(specs: Sequence[PartitionSpec], max_records: int | None) -> list[PartitionSpec]:
    """Cap a bounded plan at `max_records` offsets in total.

    Partitions are filled in partition order (deterministic, and each
    partition's read stays a contiguous prefix, which is what gets committed).
    The cap counts offsets, so on compacted/transactional topics fewer
    records than `max_records` may be read.
    """
    if max_records is None:
        return list(specs)
    left = max_records
    capped = []
    for spec in sorted(specs, key=lambda s: s.partition):
        take = min(spec.stop - spec.start, left)
        left -= take
        capped.append(PartitionSpec(spec.topic, spec.partition, spec.start, spec.start + take))
    return capped


def _moved_back(spec: PartitionSpec, position: int, offset: int) -> KafkaReadError:
    return KafkaReadError(
        f"{spec.topic}/{spec.partition}: the partition's offsets went back from {position} to {offset}: the topic "
        "was deleted and recreated, or truncated; stopping (the group's offsets belong to the old log: reset them "
        "or use a new group)")


class _PlanPartitions(beam.DoFn):
    """Runs on the worker at pipeline start: one `PartitionSpec` per partition.

    Start = the group's committed offset; a partition without one starts at
    `start` (`StartPosition`); one whose committed offset fell out of the
    partition's range, at the earliest offset. That start is committed right
    away, so `CommitOffsets` always has a base to advance from and never has
    to guess where the contiguous acknowledged prefix begins.
    """

    def __init__(self, conn: KafkaConnection, topic: str, bounded: bool,
                 max_records: int | None, start: StartPosition | None = None) -> None:
        self._conn = conn
        self._topic = topic
        self._bounded = bounded
        self._max_records = max_records
        self._start = start or StartPosition.from_reset(dict(conn.properties))

    def process(self, _impulse: bytes) -> Iterator[PartitionSpec]:
        yield from self.plan()

    def plan(self, known: Collection[int] = ()) -> list[PartitionSpec]:
        """Specs of the partitions not in `known` (their starts committed), in partition order."""
        consumer = Consumer(consumer_config(self._conn))
        try:
            specs, to_commit = self._plan(consumer, known)
            if to_commit:
                with_retries(lambda: consumer.commit(offsets=to_commit, asynchronous=False))
        finally:
            consumer.close()
        specs = plan_stops(specs, self._max_records) if self._bounded else specs
        if specs or not known:
            _LOG.info("kafka read plan for %s (group %s): %s", self._topic, self._conn.group_id,
                      ", ".join(f"p{s.partition}=[{s.start},{s.stop})" for s in specs))
        return [spec for spec in specs if spec.stop > spec.start]

    def _plan(self, consumer: Consumer, known: Collection[int]) -> tuple[list[PartitionSpec], list[TopicPartition]]:
        metadata = consumer.list_topics(self._topic, timeout=_METADATA_TIMEOUT_S)
        topic_md = metadata.topics.get(self._topic)
        if topic_md is None or topic_md.error is not None or not topic_md.partitions:
            reason = topic_md.error.str() if topic_md is not None and topic_md.error else "no partitions"
            raise KafkaReadError(
                f"Kafka topic {self._topic!r} does not exist or is not readable on "
                f"{self._conn.bootstrap_servers} ({reason})")
        partitions = [TopicPartition(self._topic, p) for p in sorted(topic_md.partitions) if p not in known]
        if not partitions:
            return [], []
        committed = with_retries(
            lambda: consumer.committed(partitions, timeout=_METADATA_TIMEOUT_S))
        specs, to_commit = [], []
        for tp in committed:
            partition = TopicPartition(self._topic, tp.partition)
            low, high = with_retries(lambda p=partition: consumer.get_watermark_offsets(p, timeout=_METADATA_TIMEOUT_S))
            if tp.offset == OFFSET_INVALID:
                start = self._first_offset(consumer, tp.partition, low, high)
            elif tp.offset > high:
                raise KafkaReadError(
                    f"{self._topic}/{tp.partition}: the group's committed offset {tp.offset} is past the partition's "
                    f"end {high}: the topic was deleted and recreated, or truncated; reset the group's offsets "
                    f"(kafka-consumer-groups --reset-offsets) or use a new group")
            else:
                start = tp.offset if low <= tp.offset <= high else low
                if start != tp.offset:
                    _LOG.warning("%s/%d: committed offset %d outside [%d, %d]; restarting at %d",
                                 self._topic, tp.partition, tp.offset, low, high, start)
            if start != tp.offset:
                to_commit.append(TopicPartition(self._topic, tp.partition, start))
            stop = high if self._bounded else UNBOUNDED_STOP
            specs.append(PartitionSpec(self._topic, tp.partition, start, stop))
        return specs, to_commit

    def _first_offset(self, consumer: Consumer, partition: int, low: int, high: int) -> int:
        """Where a partition the group never committed starts (`self._start`)."""
        kind = self._start.kind
        if kind == "error":
            raise KafkaReadError(
                f"group {self._conn.group_id!r} has no committed offset for {self._topic}/{partition} and "
                "auto.offset.reset=error: commit one, or give a start position")
        if kind == "latest":
            return high
        if kind == "timestamp":
            [found] = with_retries(lambda: consumer.offsets_for_times(
                [TopicPartition(self._topic, partition, self._start.timestamp_ms)], timeout=_METADATA_TIMEOUT_S))
            return high if found.offset < 0 else max(low, found.offset)   # -1: nothing that late
        return low


class _DiscoverPartitions(beam.DoFn):
    """Unbounded reads: plans at each tick of a periodic impulse, emitting only partitions not
    planned before (kept in state, so a restore from a checkpoint does not read one twice).

    The first plan starts where `start` says; a partition added to the topic later starts at
    its earliest offset whatever `start` says (as Flink's KafkaSource does), unless the group
    has committed an offset for it.
    """
    KNOWN = ReadModifyWriteStateSpec("known", coders.IterableCoder(coders.VarIntCoder()))

    def __init__(self, conn: KafkaConnection, topic: str, start: StartPosition) -> None:
        self._first = _PlanPartitions(conn, topic, bounded=False, max_records=None, start=start)
        self._later = _PlanPartitions(conn, topic, bounded=False, max_records=None, start=StartPosition("earliest"))

    def process(self, _tick: tuple[str, Timestamp],
                known_state=beam.DoFn.StateParam(KNOWN)) -> Iterator[PartitionSpec]:
        known = known_state.read()
        specs = self._first.plan() if known is None else self._later.plan(set(known))
        if known is not None and specs:
            _LOG.warning("discovered partition(s) %s of %s: reading them from %s",
                         ", ".join(str(s.partition) for s in specs), specs[0].topic,
                         ", ".join(f"p{s.partition}@{s.start}" for s in specs))
        known_state.write(sorted({*(known or ()), *(s.partition for s in specs)}))
        yield from specs


class _PartitionRestrictions(RestrictionProvider):
    """Offsets of one partition; never pre-split (a partition is read in order)."""

    def initial_restriction(self, spec: PartitionSpec) -> PartitionRange:
        return PartitionRange(spec.topic, spec.partition, spec.start, spec.stop)

    def create_tracker(self, restriction: PartitionRange) -> GrowableOffsetRestrictionTracker:
        key = (restriction.topic, restriction.partition)
        return GrowableOffsetRestrictionTracker(restriction, lambda: _HIGH_WATERMARKS.get(key))

    def split(self, spec: PartitionSpec, restriction: PartitionRange) -> Iterator[PartitionRange]:
        yield restriction

    def restriction_size(self, spec: PartitionSpec, restriction: PartitionRange) -> int:
        if restriction.stop != UNBOUNDED_STOP:
            return restriction.size()
        high = _HIGH_WATERMARKS.get((spec.topic, spec.partition), restriction.start)
        return max(0, high - restriction.start)

    def truncate(self, spec: PartitionSpec, restriction: PartitionRange) -> PartitionRange | None:
        # On a drain, an unbounded partition read stops at its next checkpoint.
        return None if restriction.stop == UNBOUNDED_STOP else restriction


@dataclass
class _CachedConsumer:
    consumer: Consumer
    # Offset the consumer returns next for the partition it is keyed by, or None
    # when it must be re-positioned.
    position: int | None = None


@dataclass
class _Call:
    """State of one `process()` call over a restriction."""
    spec: PartitionSpec
    tracker: GrowableOffsetRestrictionTracker
    estimator: ManualWatermarkEstimator
    position: int  # covers_from of the next record
    deadline: float
    claimed: int = 0
    bytes: int = 0  # of `records`, for the counter
    skipped: int = 0  # offsets without a record (markers, compaction, retention)
    done: bool = False
    records: list[KafkaRecord] = field(default_factory=list)   # this poll's (its gaps join them when emitted)
    gaps: list[OffsetGap] = field(default_factory=list)


class _ReadPartitionFn(beam.DoFn):
    """Bounded SDF: reads each partition's `[start, stop)` and finishes."""

    def __init__(self, conn: KafkaConnection, settings: ReadSettings,
                 services: WorkerServices = NO_SERVICES) -> None:
        self._conn = conn
        self._settings = settings
        self._services = services
        # Most recently read partition last; at most settings.max_open_consumers.
        self._consumers: OrderedDict[tuple[str, int], _CachedConsumer] = OrderedDict()
        self._slack = Duration(settings.watermark_slack_s)
        self._offsets: GroupOffsets | None = None              # made when an offset needs refreshing
        self._refreshed: dict[tuple[str, int], float] = {}     # monotonic time of the last refresh

    def setup(self) -> None:
        self._consumers = OrderedDict()
        self._services.start()

    def teardown(self) -> None:
        for cached in self._consumers.values():
            cached.consumer.close()
        self._consumers = OrderedDict()
        if self._offsets is not None:
            self._offsets.close()
            self._offsets = None

    def process(
        self,
        spec: PartitionSpec,
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(
            ManualWatermarkEstimator.default_provider()),
        tracker=beam.DoFn.RestrictionParam(_PartitionRestrictions()),
    ) -> Iterator[WindowedValue]:
        restriction = tracker.current_restriction()
        if restriction.start < restriction.stop:
            yield from self._read(spec, tracker, watermark_estimator)

    def _read(self, spec: PartitionSpec, tracker: GrowableOffsetRestrictionTracker,
              estimator: ManualWatermarkEstimator) -> Iterator[WindowedValue]:
        start = tracker.current_restriction().start
        cached = self._consumer_at(spec, start)
        call = _Call(spec, tracker, estimator, start,
                     time.monotonic() + self._settings.max_call_seconds)
        cached.position = None  # unknown until this call returns cleanly
        while not call.done:
            if (call.claimed >= self._settings.max_records_per_call
                    or time.monotonic() >= call.deadline):
                tracker.defer_remainder()  # self-checkpoint: bounded bundles
                break
            messages = self._consume(cached.consumer, call)
            if not messages:
                self._idle(call)
                break
            consumed_all = self._handle_batch(call, messages)
            batch = self._batch(call)
            if batch is not None:
                yield batch
            if not consumed_all:
                return  # consumer is ahead of the restriction: re-position next time
        batch = self._batch(call)   # gaps found after the last poll (at the end of the partition)
        if batch is not None:
            yield batch
        cached.position = call.position
        self._note_high_watermark(cached.consumer, spec)

    def _batch(self, call: _Call) -> WindowedValue | None:
        """The poll's records and gaps as one element (None if it found neither), stamped with its
        oldest record's time (a batch of gaps only: the watermark, which a gap must not move)."""
        records, gaps = call.records, call.gaps
        if not records and not gaps:
            return None
        if records:
            _RECORDS_READ.inc(len(records))
            stamps = [r.timestamp_ms for r in records]   # records only: the gaps are added below
            # Never past the clock: one record stamped far ahead must not make the rest late.
            newest = min(event_time(max(stamps)), Timestamp.now())
            self._advance_watermark(call, newest - self._slack)
            stamp = event_time(min(stamps))
        else:
            stamp = self._watermark(call)
        _BYTES_READ.inc(call.bytes)
        _SKIPPED_OFFSETS.inc(call.skipped)
        call.bytes = call.skipped = 0
        batch: RecordBatch = [*records, *gaps]
        call.records, call.gaps = [], []
        return in_global_window(batch, stamp)

    def _consumer_at(self, spec: PartitionSpec, start: int) -> _CachedConsumer:
        key = (spec.topic, spec.partition)
        cached = self._consumers.get(key)
        if cached is not None:
            self._consumers.move_to_end(key)
        elif len(self._consumers) < self._settings.max_open_consumers:
            cached = self._consumers[key] = _CachedConsumer(Consumer(consumer_config(self._conn)))
        else:
            # Take over the least recently read partition's consumer: assign() below
            # replaces its assignment (and drops that partition's pre-fetched records).
            _, cached = self._consumers.popitem(last=False)
            cached.position = None
            self._consumers[key] = cached
        if cached.position != start:
            # assign() (re)sets the fetch position; it drops the pre-fetched queue.
            cached.consumer.assign([TopicPartition(spec.topic, spec.partition, start)])
        return cached

    def _consume(self, consumer: Consumer, call: _Call) -> list[Message]:
        """What is already fetched (up to the call's quota), else wait for one message.

        consume(n, timeout) blocks until n messages or the timeout, so asking
        for more than is available would stall every partition end.
        """
        want = min(self._settings.poll_batch,
                   self._settings.max_records_per_call - call.claimed,
                   call.tracker.current_restriction().stop - call.position)
        try:
            messages = consumer.consume(num_messages=max(1, want), timeout=0)
            return messages or consumer.consume(
                num_messages=1, timeout=self._settings.poll_timeout_s)
        except KafkaException as exc:
            raise KafkaReadError(
                f"{call.spec.topic}/{call.spec.partition}: consume failed: {exc}") from exc

    def _handle_batch(self, call: _Call, messages: list[Message]) -> bool:
        """Claim and convert a polled batch; False if it stopped mid-batch."""
        stop = call.tracker.current_restriction().stop
        for i, msg in enumerate(messages):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._at_end_of_partition(call, msg.offset())
                    if call.done:
                        return i == len(messages) - 1
                    continue
                self._check_error(call.spec, err)
                continue
            offset = msg.offset()
            if offset < call.position:
                raise _moved_back(call.spec, call.position, offset)
            if not call.tracker.try_claim(offset):
                # Past the (possibly just split) restriction stop: no record lies below it.
                self._skip_to(call, offset)
                call.done = True
                return False
            call.records.append(self._to_record(call, msg))
            call.skipped += offset - call.position
            call.position = offset + 1
            call.claimed += 1
            if call.position >= stop:
                call.done = True
                return i == len(messages) - 1
        return True

    def _at_end_of_partition(self, call: _Call, eof_offset: int) -> None:
        """Caught up: no record lies between the position and `eof_offset` (the end for this
        consumer: the last stable offset under read_committed)."""
        stop = call.tracker.current_restriction().stop
        if eof_offset < call.position:
            raise _moved_back(call.spec, call.position, eof_offset)
        if eof_offset >= stop:
            # Nothing left to read; the claim that fails marks the restriction done.
            self._skip_to(call, stop)
            call.tracker.try_claim(stop)
            call.done = True
            return
        if eof_offset > call.position:
            # E.g. the commit marker behind the newest record: claimed, so a checkpoint
            # resumes at the end (the consumer's position), and acknowledged now rather
            # than with the next record, which may be long in coming.
            claimed = call.tracker.try_claim(eof_offset - 1)
            self._skip_to(call, eof_offset)
            if not claimed:  # a split has just moved the stop below the end
                call.done = True
                return
        if stop == UNBOUNDED_STOP:
            self._idle(call)

    def _skip_to(self, call: _Call, end: int) -> None:
        """No record lies in `[position, end)`: emit that gap, capped at the restriction's
        stop (past it, the residual's first record covers from its start)."""
        end = min(end, call.tracker.current_restriction().stop)
        if end <= call.position:
            return
        call.gaps.append(OffsetGap(SourcePosition(call.spec.topic, call.spec.partition, end - 1, call.position)))
        call.skipped += end - call.position
        call.position = end

    def _watermark(self, call: _Call) -> Timestamp:
        stamp = call.estimator.current_watermark()
        return Timestamp.now() - self._slack if stamp is None else stamp

    def _idle(self, call: _Call) -> None:
        """Caught up or nothing polled: advance the watermark and yield the worker."""
        if call.done:
            return
        self._keep_offset_alive(call)
        self._advance_watermark(call, Timestamp.now() - self._slack)
        call.tracker.defer_remainder(Duration(self._settings.resume_delay_s))
        call.done = True

    def _keep_offset_alive(self, call: _Call) -> None:
        """Unbounded reads (`ReadSettings.offset_refresh_s`): re-commit an idle partition's offset."""
        if call.spec.stop != UNBOUNDED_STOP:
            return
        key, now = (call.spec.topic, call.spec.partition), time.monotonic()
        if now < self._refreshed.get(key, 0.0) + self._settings.offset_refresh_s:
            return
        if self._offsets is None:
            self._offsets = GroupOffsets(self._conn)
        self._refreshed[key] = now
        self._offsets.refresh(call.spec.topic, call.spec.partition, call.position)

    @staticmethod
    def _advance_watermark(call: _Call, candidate: Timestamp) -> None:
        current = call.estimator.current_watermark()
        if current is None or candidate > current:
            call.estimator.set_watermark(candidate)

    def _to_record(self, call: _Call, msg: Message) -> KafkaRecord:
        ts_type, ts_ms = msg.timestamp()
        if ts_type == TIMESTAMP_NOT_AVAILABLE:
            ts_ms = int(time.time() * 1000)
        key, value = msg.key(), msg.value()
        call.bytes += len(value or b"") + len(key or b"")
        clamped = clamped_ms(ts_ms)
        if clamped != ts_ms:
            _CLAMPED_TIMESTAMPS.inc()
            ts_ms = clamped
        return KafkaRecord(SourcePosition(call.spec.topic, call.spec.partition, msg.offset(), call.position),
                           key, value, ts_ms)

    @staticmethod
    def _check_error(spec: PartitionSpec, err: KafkaError) -> None:
        if err.fatal() or err.code() in _FATAL_CODES:
            raise KafkaReadError(
                f"{spec.topic}/{spec.partition}: fatal consumer error {err.name()}: {err.str()}")
        _LOG.warning("%s/%d: consumer error %s (%s); retrying", spec.topic, spec.partition,
                     err.name(), "retriable" if err.retriable() else "librdkafka recovers")

    @staticmethod
    def _note_high_watermark(consumer: Consumer, spec: PartitionSpec) -> None:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(spec.topic, spec.partition), cached=True)
        if high >= 0:
            _HIGH_WATERMARKS[(spec.topic, spec.partition)] = high


class _ReadUnboundedPartitionFn(_ReadPartitionFn):
    """Unbounded SDF: same loop, restriction stop = 2**63-1."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        spec: PartitionSpec,
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(
            ManualWatermarkEstimator.default_provider()),
        tracker=beam.DoFn.RestrictionParam(_PartitionRestrictions()),
    ) -> Iterator[WindowedValue]:
        yield from super().process(spec, watermark_estimator, tracker)


class ReadFromKafka(beam.PTransform):
    """Read one topic with a consumer group's committed offsets as the start.

    bounded=True is a drain: every partition stops at the high watermark seen
    at planning time (capped in total by `max_records`), then the pipeline
    finishes. bounded=False reads forever (streaming; Flink). Nothing touches
    Kafka at construction time, so building the pipeline needs no broker.
    A group without committed offsets starts at `start` (default: what the
    connection's `auto.offset.reset` says, else the earliest offset).
    Output: `RecordBatch`es - a poll's `KafkaRecord`s of one partition in offset order, then an
    `OffsetGap` where the read ends behind offsets without a record (pass it on to
    `WriteToKafka`, which acknowledges it) - timestamped with their oldest record's Kafka
    timestamp. `| beam.FlatMap(iter)` gives one element per record.
    """

    def __init__(self, connection: KafkaConnection, topic: str, *, bounded: bool = False,
                 max_records: int | None = None,
                 settings: ReadSettings = ReadSettings(), start: StartPosition | None = None,
                 services: WorkerServices = NO_SERVICES) -> None:
        super().__init__()
        connection.require_group()
        if max_records is not None and (not bounded or max_records < 0):
            raise ValueError("max_records needs bounded=True and must be >= 0")
        self._conn = connection
        self._topic = topic
        self._bounded = bounded
        self._max_records = max_records
        self._settings = settings
        self._start = start or StartPosition.from_reset(dict(connection.properties))
        self._services = services

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        read_fn = (_ReadPartitionFn if self._bounded else _ReadUnboundedPartitionFn)(
            self._conn, self._settings, self._services)
        every = self._settings.partition_discovery_s
        if self._bounded or not every:
            specs = (pbegin
                     | "Impulse" >> beam.Impulse()
                     | "PlanPartitions" >> beam.ParDo(
                         _PlanPartitions(self._conn, self._topic, self._bounded, self._max_records, self._start)))
        else:
            specs = (pbegin
                     | "DiscoveryTicks" >> PeriodicImpulse(start_timestamp=Timestamp.now(), fire_interval=every)
                     | "KeyByTopic" >> beam.Map(lambda tick, topic: (topic, tick), self._topic)
                     | "DiscoverPartitions" >> beam.ParDo(_DiscoverPartitions(self._conn, self._topic, self._start)))
        return specs | "ReadPartitions" >> beam.ParDo(read_fn).with_output_types(RecordBatch)
