"""Commit consumer-group offsets once the outputs for them are acknowledged.

Per `topic/partition` key a stateful DoFn keeps the committed base and the
out-of-order acknowledged ranges (bounded by the number of gaps); when the
contiguous prefix advances, the new offset is committed
- in streaming (`after_checkpoint=True`), from a bundle finalizer: on Flink
  that runs only after the checkpoint holding this state completed;
- in a bounded drain, at the end of the bundle. Runners do not finalize bundles
  of batch jobs everywhere (portable Flink batch never does, apache/beam#19526),
  and the acks already prove the outputs are durable, so committing then is safe.
The reader self-checkpoints every `max_records_per_call` records, which ends
bundles and therefore also commits periodically during a long drain.

The base is the group's committed offset, read from Kafka the first time a
key is seen; `ReadFromKafka` commits a start offset at planning time, so one
always exists.

Commits only move forward: a retried, late (finalizers need not run in order)
or concurrent bundle may carry an offset below what is committed already, and
Kafka takes any offset from a consumer that never subscribes. So each commit
first reads the group's offsets and commits only those ahead of them, and the
read and its commit hold a lock per group shared by the whole process: a
runner keeps several instances of the committer (one per bundle processor) and
finalizes their bundles concurrently once a checkpoint completes (on Flink,
two finalizers that read the same offset before either committed once moved a
partition back from 2476 to 1476 for good).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from transforms.kafka.connection import KafkaConnection, consumer_config, with_retries
from transforms.kafka.offset_ranges import OffsetRangeSet
from transforms.kafka.records import CommittedOffset, OffsetAck
from transforms.monitoring import metrics
from transforms.monitoring.services import NO_SERVICES, WorkerServices

_LOG = logging.getLogger(__name__)

_TIMEOUT_S = 30.0

_OFFSET_COMMITS = metrics.counter("offset_commits")
_COMMITTED_OFFSET = metrics.gauge("committed_offset")

# (committed base, pending ranges above it)
_STATE_CODER = coders.TupleCoder((
    coders.VarIntCoder(),
    coders.IterableCoder(coders.TupleCoder((coders.VarIntCoder(), coders.VarIntCoder()))),
))


class KafkaCommitError(RuntimeError):
    """Kafka refused a commit, or the group has no committed offset to advance from."""


def _hint(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if err is not None and err.code() in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION):
        return " (another application is subscribed with this group id: give this job a group of its own)"
    if err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return " (the job's principal may not commit for this group: grant it READ on the group)"
    return ""


_GROUP_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_GROUP_LOCKS_GUARD = threading.Lock()


def _group_lock(conn: KafkaConnection) -> threading.Lock:
    """The lock every committer of this process holds for one group's read-and-commit."""
    key = (conn.bootstrap_servers, conn.require_group())
    with _GROUP_LOCKS_GUARD:
        return _GROUP_LOCKS.setdefault(key, threading.Lock())


class GroupOffsets:
    """The consumer group's committed offsets in Kafka, through a member that never subscribes.

    The committer's only way to Kafka (its seam: Beam-glue tests pass an in-memory twin).
    """

    def __init__(self, conn: KafkaConnection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._commit_lock = _group_lock(conn)   # a read and the commit it decides, one at a time
        self._consumer: Consumer | None = None

    def _client(self) -> Consumer:
        with self._lock:
            if self._consumer is None:
                self._consumer = Consumer(consumer_config(self._conn))
            return self._consumer

    def committed(self, topic: str, partition: int) -> int:
        offset = self._committed([(topic, partition)])[(topic, partition)]
        if offset == OFFSET_INVALID:
            raise KafkaCommitError(
                f"group {self._conn.group_id!r} has no committed offset for {topic}/{partition}; "
                "ReadFromKafka commits one at planning time - was a different group used?")
        return offset

    def committed_offsets(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's offsets of `keys` (OFFSET_INVALID where it has none), in one round trip."""
        return self._committed(keys)

    def _committed(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        client = self._client()
        tps = with_retries(lambda: client.committed([TopicPartition(t, p) for t, p in keys], timeout=_TIMEOUT_S))
        return {(tp.topic, tp.partition): tp.offset for tp in tps}

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commits synchronously the offsets ahead of the group's; raises `KafkaCommitError`
        when Kafka refuses (after `with_retries` outlasted a settling broker): a job that
        cannot commit must not run on as if it could (a re-run would repeat all of it).

        The read costs one OffsetFetch round trip per commit, i.e. per bundle. Within this
        process the read and the commit are serialized for the group (across every instance);
        another process's commit can still land between them (Kafka has no conditional commit
        for a member that never joins the group).
        """
        with self._commit_lock:
            try:
                current = self._committed(sorted(offsets))
                behind = sorted((key, o) for key, o in offsets.items() if o <= current[key])
                if behind:
                    _LOG.info("not committing %s: the group is there or further already",
                              ", ".join(f"{t}/{p}@{o} (at {current[(t, p)]})" for (t, p), o in behind))
                tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items()) if o > current[(t, p)]]
                if not tps:
                    return
                client = self._client()
                results = with_retries(lambda: client.commit(offsets=tps, asynchronous=False))
            except KafkaException as exc:
                raise KafkaCommitError(
                    f"offset commit {', '.join(f'{t}/{p}@{o}' for (t, p), o in sorted(offsets.items()))} for group "
                    f"{self._conn.group_id!r} failed: {exc.args[0] if exc.args else exc}{_hint(exc)}") from exc
        failed = [tp for tp in results or () if tp.error is not None]
        for tp in results or tps:
            if tp.error is None:
                _COMMITTED_OFFSET.set(tp.offset, topic=tp.topic, partition=tp.partition)
        if failed:
            raise KafkaCommitError(
                f"offset commit for group {self._conn.group_id!r} failed: "
                + ", ".join(f"{tp.topic}/{tp.partition}@{tp.offset}: {tp.error}" for tp in failed))
        _LOG.debug("committed %s", _describe(tps))

    def refresh(self, topic: str, partition: int, position: int) -> bool:
        """Re-commits the partition's offset if it is `position` (the reader's, caught up: nothing
        of it is in flight, so no commit ahead of it can race this one), which restarts the
        broker's retention clock for it. Returns whether it did."""
        key = (topic, partition)
        with self._commit_lock:
            if self._committed([key])[key] != position:
                return False
            client = self._client()
            [result] = with_retries(lambda: client.commit(
                offsets=[TopicPartition(topic, partition, position)], asynchronous=False))
        if result.error is not None:
            raise KafkaCommitError(f"refreshing the offset {topic}/{partition}@{position} of group "
                                   f"{self._conn.group_id!r} failed: {result.error}")
        _LOG.debug("refreshed %s/%d@%d", topic, partition, position)
        return True

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


OffsetsFactory = Callable[[KafkaConnection], GroupOffsets]


class DeliveredPrefix:
    """Bounded runs: the writer's own commits, every few seconds of work.

    A runner may hold the committer's stage until the writer's bundle ends, and
    on the FnApiRunner that bundle is a whole drain run: nothing would be
    committed until its end, and a crash would repeat every scoring call of the
    run. The writer knows, right after a `flush()`, that everything it produced
    is delivered; this commits the contiguous prefix of that from the group's
    committed offset (re-read each time: other writers and the committer move
    it too). Forward-only through `GroupOffsets.commit`. Never in streaming:
    there commits wait for the checkpoint that holds the reader's position.
    """

    def __init__(self, conn: KafkaConnection, offsets_factory: OffsetsFactory = GroupOffsets) -> None:
        self._offsets = offsets_factory(conn)
        self._pending: dict[tuple[str, int], OffsetRangeSet] = {}

    def delivered(self, sent: dict[tuple[str, int], OffsetRangeSet]) -> None:
        """`sent`: source ranges whose outputs the broker has acknowledged."""
        for key, ranges in sent.items():
            pending = self._pending.setdefault(key, OffsetRangeSet())
            for start, end in ranges.ranges:
                pending.add(start, end)
        current = self._offsets.committed_offsets(list(self._pending))
        advanced = {}
        for key, pending in self._pending.items():
            base = current[key]
            if base != OFFSET_INVALID and (end := pending.advance(base)) > base:
                advanced[key] = end
        if advanced:
            self._offsets.commit(advanced)

    def close(self) -> None:
        self._offsets.close()


class _CommitFn(beam.DoFn):
    """Bounded runs: commits what advanced at the end of each bundle.

    It must not even declare a bundle finalizer: portable Flink rejects batch
    jobs whose DoFns ask for finalization (UnsupportedOperationException).
    """
    PENDING = ReadModifyWriteStateSpec("pending", _STATE_CODER)

    def __init__(self, conn: KafkaConnection, offsets_factory: OffsetsFactory = GroupOffsets,
                 services: WorkerServices = NO_SERVICES) -> None:
        self._conn = conn
        self._offsets_factory = offsets_factory
        self._services = services
        self._offsets: GroupOffsets | None = None
        self._to_commit: dict[tuple[str, int], int] = {}

    def setup(self) -> None:
        self._offsets = self._offsets_factory(self._conn)
        self._services.start()

    def start_bundle(self) -> None:
        # A fresh dict per bundle: the finalizer keeps the previous one.
        self._to_commit = {}

    def process(self, keyed: tuple[str, OffsetAck],
                pending_state=beam.DoFn.StateParam(PENDING)) -> Iterator[CommittedOffset]:
        yield from self._advance(keyed[1], pending_state)

    def finish_bundle(self) -> None:
        if self._to_commit:
            self._commit_callback(self._to_commit)()

    def _advance(self, ack: OffsetAck, pending_state) -> Iterator[CommittedOffset]:
        assert self._offsets is not None
        stored = pending_state.read()
        if stored is None:
            base, pending = self._offsets.committed(ack.topic, ack.partition), OffsetRangeSet()
        else:
            base, pending = stored[0], OffsetRangeSet(stored[1])
        for start, end in ack.ranges:
            pending.add(start, end)
        advanced = pending.advance(base)
        pending_state.write((advanced, pending.ranges))
        if advanced == base:
            return
        self._to_commit[(ack.topic, ack.partition)] = advanced
        _OFFSET_COMMITS.inc()
        yield CommittedOffset(ack.topic, ack.partition, advanced)

    def teardown(self) -> None:
        if self._offsets is not None:
            self._offsets.close()
            self._offsets = None

    def _commit_callback(self, offsets: dict[tuple[str, int], int]) -> Callable[[], None]:
        store = self._offsets
        assert store is not None
        return lambda: store.commit(offsets)


class _CommitAfterCheckpointFn(_CommitFn):
    """Streaming: commits from a bundle finalizer, which Flink runs after the checkpoint
    that holds this bundle's state has completed."""

    def process(self, keyed: tuple[str, OffsetAck], finalizer=beam.DoFn.BundleFinalizerParam,
                pending_state=beam.DoFn.StateParam(_CommitFn.PENDING)) -> Iterator[CommittedOffset]:
        first = not self._to_commit
        yield from self._advance(keyed[1], pending_state)
        if first and self._to_commit:
            finalizer.register(self._commit_callback(self._to_commit))

    def finish_bundle(self) -> None:
        pass  # the finalizer commits


def _describe(tps) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}@{tp.offset}" for tp in tps)


class CommitOffsets(beam.PTransform):
    """Commit the acknowledged contiguous prefix of each partition for the group.

    Output: one `CommittedOffset` each time a partition's prefix advances
    (committed at the end of that bundle, or after its checkpoint when
    `after_checkpoint`: streaming). `offsets_factory(connection)` is how the
    committer reaches the group's offsets (default: Kafka).
    """

    def __init__(self, connection: KafkaConnection, after_checkpoint: bool = False,
                 offsets_factory: OffsetsFactory = GroupOffsets, services: WorkerServices = NO_SERVICES) -> None:
        super().__init__()
        connection.require_group()
        self._conn = connection
        self._after_checkpoint = after_checkpoint
        self._offsets_factory = offsets_factory
        self._services = services

    def expand(self, acks: beam.PCollection) -> beam.PCollection:
        commit_fn = _CommitAfterCheckpointFn if self._after_checkpoint else _CommitFn
        return (
            acks
            | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
            | "KeyByPartition" >> beam.Map(
                lambda a: (f"{a.topic}/{a.partition}", a)).with_output_types(
                    tuple[str, OffsetAck])
            | "Commit" >> beam.ParDo(commit_fn(self._conn, self._offsets_factory, self._services))
            .with_output_types(CommittedOffset))
