"""Exactly-once output (`--delivery=exactly_once`): each input partition's results, dead letters
and consumed offset go to Kafka in one transaction.

Shape: outbound records are keyed by their *source* partition and written by
a stateful DoFn, one transactional producer per input partition
(`transactional.id = <group>.<topic>.<partition>`), so:
- a transaction holds exactly the outputs of the offsets `[frontier, cursor)`
  of its partition and commits the group's offset `cursor` with them
  (`send_offsets_to_transaction`); outputs arrive out of order (shards and
  workers finish independently), so a record above a gap waits in keyed state
  until the gap closes - the offsets in a transaction never run ahead of
  outputs that are not in it or in an earlier committed one;
- Kafka's committed offset is the truth: a record below the partition's
  committed frontier was written by a committed transaction already and is
  dropped. That is what makes runner retries, restarts from an older checkpoint
  and a re-run after `kill -9` safe: the input is read again, scored again (the
  scoring call stays at-least-once; its `Idempotency-Key` lets a service
  de-duplicate), and written only once;
- `init_transactions` with the partition's id fences any older producer of it
  (a zombie worker, or a second job started with the same group), aborting its
  open transaction; a producer that finds itself fenced fails its job with a
  clear error and this process never takes that partition back.
A transaction commits at the end of each bundle, or earlier once it has been
open `txn_max_s`. It is *not* deferred to a bundle finalizer after a Flink
checkpoint: librdkafka cannot resume another producer's open transaction after
a crash (Flink's own KafkaSink re-commits it from checkpointed state), so a
transaction left open between a completed checkpoint and its finalizer would
be aborted on recovery while the checkpoint says its input was consumed - lost.
Committing at bundle end and dropping what the committed frontier already
covers gives exactly-once without that window. Consumers read with
`isolation.level=read_committed` (librdkafka's default).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from transforms.control.settings import DEFAULTS
from transforms.kafka.connection import KafkaConnection, consumer_config, producer_config, with_retries
from transforms.kafka.records import CommittedOffset, OffsetGap, OutboundRecord
from transforms.monitoring import metrics
from transforms.monitoring.services import NO_SERVICES, WorkerServices
from transforms.windowing import in_global_window

_LOG = logging.getLogger(__name__)

_TIMEOUT_S = 60.0
_BACKPRESSURE_POLL_S = 0.05
# How librdkafka reports a fenced (or dead) transactional producer; at produce() sometimes as plain _FATAL.
_FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                           KafkaError._FATAL})

_RECORDS_WRITTEN = metrics.counter("records_written")
_TRANSACTIONS = metrics.counter("transactions")
_DUPLICATES_DROPPED = metrics.counter("duplicates_dropped")
_COMMITTED_OFFSET = metrics.gauge("committed_offset")

# The process's writer of each transactional id, while some instance of the DoFn uses it. A runner
# keeps several instances (one per bundle processor) and may hand one input partition to each in
# turn: one producer per id, or the next instance's init_transactions fences the previous one's,
# whose stale cursor then parks every later record of the partition in state for good. The last
# instance to let go of it (teardown) closes it: a producer kept past its users' lifetime hung in
# send_offsets_to_transaction after a broker restart (librdkafka 2.x).
_WRITERS: dict[str, _Partition] = {}
_WRITERS_LOCK = threading.Lock()


# What a transaction may stay open beyond the longest wait of the batches it holds (their deadline).
_TRANSACTION_MARGIN_S = 60.0
_TRANSACTION_TIMEOUT_KEY = "transaction.timeout.ms"


class FencedError(RuntimeError):
    """Another producer took over an input partition's transactional id: two jobs with one group?"""


def transaction_timeout_ms(longest_wait_s: float, properties: Mapping[str, str]) -> int:
    """How long the broker lets a transaction stay open before it aborts it.

    An open transaction waits for the batches whose results it will hold, each up
    to its deadline (`longest_wait_s`); a shorter timeout lets the broker abort it
    during a long outage of the service, which then looks like a fencing. A
    `transaction.timeout.ms` property shorter than that is refused (ValueError).
    """
    needed = round((longest_wait_s + _TRANSACTION_MARGIN_S) * 1000)
    given = properties.get(_TRANSACTION_TIMEOUT_KEY)
    if given is None:
        return max(120_000, needed)
    if not given.strip().isdigit() or int(given) < needed:
        raise ValueError(f"{_TRANSACTION_TIMEOUT_KEY}={given} is shorter than a batch may wait ({longest_wait_s:g} s "
                         f"deadline + {_TRANSACTION_MARGIN_S:g} s): the broker would abort transactions during a "
                         f"long outage; give at least {needed} or a shorter deadline")
    return int(given)


def transactional_id(group: str, topic: str, partition: int) -> str:
    return f"{group}.{topic}.{partition}"


def _fatal(exc: KafkaException) -> bool:
    """Fenced, or the producer is dead (`_FENCED_CODES`)."""
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    return err is not None and (err.fatal() or err.code() in _FENCED_CODES)


@dataclass
class _Partition:
    """The writer of one input partition: its producer, Kafka's committed frontier and the open transaction."""
    topic: str
    partition: int
    txn_id: str
    producer: Producer
    frontier: int                 # the group's committed offset: everything below is written
    cursor: int                   # end of what the open transaction holds (>= frontier)
    in_txn: bool = False
    opened_at: float = 0.0
    produced: int = 0
    failures: list[KafkaError] = field(default_factory=list)
    owner: object = None          # the DoFn instance that opened the current transaction
    users: set[int] = field(default_factory=set)   # ids of the DoFn instances that hold it


class _TransactionalWriteFn(beam.DoFn):
    # Records above a gap of their partition, waiting for the records below them.
    WAITING = BagStateSpec("waiting", PickleCoder())

    def __init__(self, conn: KafkaConnection, txn_max_s: float, timeout_ms: int,
                 services: WorkerServices = NO_SERVICES) -> None:
        self._conn = conn
        self._services = services
        self._txn_max_s = txn_max_s
        self._timeout_ms = timeout_ms
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._waiting: dict[tuple[str, int], dict[int, OutboundRecord | OffsetGap]] = {}
        self._consumer: Consumer | None = None

    def setup(self) -> None:
        self._services.start()
        self._partitions = {}
        self._consumer = Consumer(consumer_config(self._conn))
        self._group_metadata = self._consumer.consumer_group_metadata()

    def teardown(self) -> None:
        for p in self._partitions.values():
            if p.owner is self:      # a shared writer another instance has a transaction open on stays as it is
                self._abort(p)
            with _WRITERS_LOCK:
                p.users.discard(id(self))
                last = not p.users
                if last and _WRITERS.get(p.txn_id) is p:
                    del _WRITERS[p.txn_id]
            if last and p.owner is not self:
                self._abort(p)   # never raises: teardown must not replace the bundle's own error
        self._partitions = {}
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def start_bundle(self) -> None:
        self._waiting = {}     # read again from state: it may have been restored from a checkpoint

    def process(self, keyed: tuple[str, OutboundRecord | OffsetGap],
                waiting_state=beam.DoFn.StateParam(WAITING)) -> Iterator[CommittedOffset]:
        record = keyed[1]
        key = (record.source.topic, record.source.partition)
        p = self._partition(*key)
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = {max(r.source.covers_from, p.cursor): r for r in waiting_state.read()
                                           if r.source.offset >= p.cursor}
        if record.source.offset < p.cursor:
            _DUPLICATES_DROPPED.inc()     # in a committed transaction already, or in the open one
            return
        stored = bool(waiting)            # state holds exactly `waiting` (kept in step below)
        # A record may cover from below the cursor: after a restore from an older checkpoint the reader
        # resumes below a gap (a commit marker) that a committed transaction already moved over.
        start = max(record.source.covers_from, p.cursor)
        waiting[start] = record
        while p.cursor in waiting:
            self._produce(p, waiting.pop(p.cursor))
        if start in waiting:                         # it waits for a gap below it
            waiting_state.add(record)
        elif stored:                                 # it closed a gap: rewrite what still waits
            waiting_state.clear()
            for r in waiting.values():
                waiting_state.add(r)
        if p.in_txn and time.monotonic() - p.opened_at >= self._txn_max_s:
            yield from self._commit(p)

    def finish_bundle(self) -> Iterable[WindowedValue]:
        for p in list(self._partitions.values()):
            if p.in_txn:
                for committed in self._commit(p):
                    yield in_global_window(committed, MIN_TIMESTAMP)

    # ---- one partition's producer and transactions ------------------------------------------------

    def _partition(self, topic: str, partition: int) -> _Partition:
        key = (topic, partition)
        p = self._partitions.get(key)
        if p is not None:
            return p
        txn_id = transactional_id(self._conn.require_group(), topic, partition)
        with _WRITERS_LOCK:
            shared = _WRITERS.get(txn_id)
            if shared is not None:
                shared.users.add(id(self))
        if shared is not None:
            p = self._partitions[key] = shared
            return p
        producer = Producer({**producer_config(self._conn), "transactional.id": txn_id,
                             _TRANSACTION_TIMEOUT_KEY: self._timeout_ms})
        try:
            with_retries(lambda: producer.init_transactions(_TIMEOUT_S))   # fences older producers of this id
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() == KafkaError.INVALID_TRANSACTION_TIMEOUT:
                raise RuntimeError(
                    f"the brokers refuse {_TRANSACTION_TIMEOUT_KEY}={self._timeout_ms} (above their "
                    "transaction.max.timeout.ms, 900000 by default): shorten the batch deadline "
                    "or raise that broker setting") from exc
            raise
        frontier = self._committed(topic, partition)
        p = self._partitions[key] = _Partition(topic, partition, txn_id, producer, frontier, frontier,
                                               users={id(self)})
        with _WRITERS_LOCK:
            _WRITERS[txn_id] = p
        return p

    def _committed(self, topic: str, partition: int) -> int:
        assert self._consumer is not None
        consumer = self._consumer
        [tp] = with_retries(lambda: consumer.committed([TopicPartition(topic, partition)], timeout=_TIMEOUT_S))
        if tp.offset == OFFSET_INVALID:
            raise RuntimeError(f"group {self._conn.group_id!r} has no committed offset for {topic}/{partition}; "
                               "ReadFromKafka commits one at planning time")
        return tp.offset

    def _produce(self, p: _Partition, record: OutboundRecord | OffsetGap) -> None:
        """Adds the record to the open transaction (opening one); an `OffsetGap` adds no record,
        only moves the offset the transaction commits."""
        if not p.in_txn:
            self._guard(p, p.producer.begin_transaction)
            p.in_txn, p.opened_at, p.produced, p.owner = True, time.monotonic(), 0, self
        if isinstance(record, OffsetGap):
            p.cursor = record.source.offset + 1
            return
        while True:
            try:
                p.producer.produce(record.topic, value=record.value, key=record.key,
                                   on_delivery=lambda err, msg, p=p: err and p.failures.append(err))
                break
            except BufferError:
                p.producer.poll(_BACKPRESSURE_POLL_S)
            except KafkaException as exc:
                self._fail(p, exc)
        p.produced += 1
        p.cursor = record.source.offset + 1

    def _commit(self, p: _Partition) -> Iterator[CommittedOffset]:
        """Commits the open transaction with the partition's offset `cursor`; any failure aborts it
        (its input is read again) and fails the bundle."""
        offsets = [TopicPartition(p.topic, p.partition, p.cursor)]
        self._guard(p, lambda: p.producer.send_offsets_to_transaction(offsets, self._group_metadata, _TIMEOUT_S))
        self._guard(p, lambda: p.producer.commit_transaction(_TIMEOUT_S))
        if p.failures:   # commit_transaction fails when a record did; this keeps the record's reason
            self._fail(p, KafkaException(p.failures[0]))
        p.in_txn, p.frontier = False, p.cursor
        _TRANSACTIONS.inc()
        _RECORDS_WRITTEN.inc(p.produced)
        _COMMITTED_OFFSET.set(p.cursor, topic=p.topic, partition=p.partition)
        yield CommittedOffset(p.topic, p.partition, p.cursor)

    def _guard(self, p: _Partition, call) -> None:
        try:
            with_retries(call)
        except KafkaException as exc:
            self._fail(p, exc)

    def _fail(self, p: _Partition, exc: KafkaException) -> None:
        """Aborts and forgets the partition's producer, in this instance and the process (the
        next bundle starts a new one from Kafka's frontier); fails the bundle."""
        self._partitions.pop((p.topic, p.partition), None)
        self._waiting.pop((p.topic, p.partition), None)
        with _WRITERS_LOCK:
            if _WRITERS.get(p.txn_id) is p:
                del _WRITERS[p.txn_id]
        if _fatal(exc):
            raise FencedError(
                f"{p.topic}/{p.partition}: fenced: transactional.id {p.txn_id!r} was taken over by another writer (a second "
                f"job with group {self._conn.group_id!r}, or a restarted worker of this one), or its producer failed "
                f"fatally; the open transaction is aborted and its input will be read again: {exc}") from exc
        self._abort(p)
        raise exc

    @staticmethod
    def _abort(p: _Partition) -> None:
        """Aborts the open transaction; its records are gone, so the cursor goes back to the frontier."""
        if p.in_txn:
            try:
                p.producer.abort_transaction(_TIMEOUT_S)
            except KafkaException as exc:
                _LOG.warning("abort of %s failed (%s); the coordinator times it out", p.txn_id, exc)
            p.in_txn, p.cursor = False, p.frontier


class WriteToKafkaExactlyOnce(beam.PTransform):
    """Write `OutboundRecord`s and commit their source offsets in one transaction per input partition.

    Output: a `CommittedOffset` per committed transaction.
    """

    def __init__(self, connection: KafkaConnection, txn_max_s: float = 10.0,
                 longest_wait_s: float = DEFAULTS.deadline_s, services: WorkerServices = NO_SERVICES) -> None:
        """`longest_wait_s`: the longest an element upstream may wait (the batch deadline); the
        transaction timeout covers it (`transaction_timeout_ms`)."""
        super().__init__()
        connection.require_group()
        self._conn = connection
        self._txn_max_s = txn_max_s
        self._timeout_ms = transaction_timeout_ms(longest_wait_s, connection.properties)
        self._services = services

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (records
                | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                | "KeyBySourcePartition" >> beam.Map(
                    lambda r: (f"{r.source.topic}/{r.source.partition}", r)).with_output_types(
                        tuple[str, OutboundRecord | OffsetGap])
                | "WriteTransactionally" >> beam.ParDo(_TransactionalWriteFn(self._conn, self._txn_max_s, self._timeout_ms, self._services))
                .with_output_types(CommittedOffset))
