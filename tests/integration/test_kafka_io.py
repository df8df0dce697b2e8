"""Pure-Python Kafka I/O against the real local broker, on the pinned FnApiRunner.

Pass-through drains (Kafka -> Kafka) check exactly-once output per drain,
commits only after delivery, `max_records`, offset gaps and backpressure; the
partition read is also driven directly, like a runner would (process, check
done, resume the residual), to split it at every offset of a transactional
partition and to split the unbounded read at any fraction (FnApiRunner cannot
finish an unbounded SDF).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.utils.timestamp import Duration, Timestamp
from confluent_kafka import Producer

import transforms.kafka.read as kafka_read
from testbed.kafka.admin import committed_offsets, consume_all, create_topic, delete_topic, end_offsets, topic_exists
from transforms.kafka.commit import CommitOffsets, GroupOffsets
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.offset_ranges import OffsetRangeSet
from transforms.kafka.read import (
    UNBOUNDED_STOP,
    ReadFromKafka,
    ReadSettings,
    _PartitionRestrictions,
    _ReadUnboundedPartitionFn,
)
from transforms.kafka.records import KafkaRecord, OffsetGap, OutboundRecord, PartitionSpec
from transforms.kafka.start import StartPosition
from transforms.kafka.tracker import PartitionRange
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


def pass_through(record: KafkaRecord | OffsetGap, topic: str) -> OutboundRecord | OffsetGap:
    if isinstance(record, OffsetGap):
        return record
    return OutboundRecord(topic, record.key, record.value or b"", record.position)


def drain(conn: KafkaConnection, source: str, sink: str, max_records: int | None = None,
          settings: ReadSettings = ReadSettings(), to_outbound=pass_through,
          options: tuple[str, ...] | list[str] = (FN_API_RUNNER,), start: StartPosition | None = None) -> dict[str, int]:
    """Kafka -> Kafka pass-through drain; returns the counters by `namespace/name`."""
    pipeline = beam.Pipeline(options=PipelineOptions(list(options)))
    _ = (pipeline
         | ReadFromKafka(conn, source, bounded=True, max_records=max_records, settings=settings, start=start)
         | beam.Map(lambda batch, topic: [to_outbound(r, topic) for r in batch], sink)   # the job's lists
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

    history = committed_history(caplog)
    assert sorted(history) == list(range(PARTITIONS))
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


def produce_transactions(bootstrap: str, topic: str, layout: list[tuple[int, bool]],
                         partitions: int = 1) -> list[bytes]:
    """One transaction per (records, commit?) in `layout`, round-robin over the partitions; each
    leaves a commit or abort marker behind it. Returns the committed values in offset order."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex[:8]}",
                         "linger.ms": 1})
    producer.init_transactions(30)
    committed = []
    for txn, (records, commit) in enumerate(layout):
        values = [b"%s%d-%d" % (b"c" if commit else b"aborted-", txn, i) for i in range(records)]
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value=value, partition=txn % partitions)
        producer.flush(30)   # aborted records must reach the log to be aborted there
        if commit:
            producer.commit_transaction(30)
            committed += values
        else:
            producer.abort_transaction(30)
    return committed


#: Committed and aborted transactions: markers inside, aborted runs, a commit marker last.
LAYOUT = [(3, True), (2, False), (1, True), (4, True), (2, False), (1, False), (2, True)]


def test_offsets_without_records_are_covered_up_to_the_end_offset(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection) -> None:
    source, sink = kafka_topic(1, "tx-in"), kafka_topic(1, "tx-out")
    committed = produce_transactions(bootstrap_servers, source, LAYOUT * 3)
    assert end_offsets(bootstrap_servers, source) == {0: 3 * 22}   # 45 records (15 aborted), 21 markers

    counters = drain(conn, source, sink, settings=ReadSettings(max_records_per_call=4))

    assert counters["kafka_read/skipped_offsets"] == 3 * 22 - len(committed)   # 15 aborted + 21 markers
    assert values_of(bootstrap_servers, sink) == Counter(committed)             # aborted: never read
    # The trailing commit marker too, so the next drain has nothing left to re-read.
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == {0: 3 * 22}
    assert drain(conn, source, sink)["kafka_read/records"] == 0


def test_commits_never_move_a_partition_backwards(bootstrap_servers: str, kafka_topic, conn: KafkaConnection) -> None:
    """A late finalizer, a retried bundle, another process: none may undo a commit."""
    topic = kafka_topic(2, "forward")
    ours, theirs = GroupOffsets(conn), GroupOffsets(conn)
    try:
        ours.commit({(topic, 0): 100, (topic, 1): 10})
        ours.commit({(topic, 0): 50, (topic, 1): 20})       # late for p0, ahead for p1
        theirs.commit({(topic, 0): 70, (topic, 1): 20})     # another process, behind and level
        assert committed_offsets(bootstrap_servers, conn.group_id, topic) == {0: 100, 1: 20}
        started = time.monotonic()
        theirs.commit({(topic, 0): 150})
        print(f"read + commit: {(time.monotonic() - started) * 1000:.1f} ms")
        assert committed_offsets(bootstrap_servers, conn.group_id, topic) == {0: 150, 1: 20}
    finally:
        ours.close()
        theirs.close()


def test_concurrent_committers_of_one_process_never_move_a_partition_backwards(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection) -> None:
    """Flink finalizes the bundles of several committer instances at once after a checkpoint:
    a slow commit of an older offset must not land after a newer one."""
    topic = kafka_topic(1, "forward-threads")
    older, newer = GroupOffsets(conn), GroupOffsets(conn)
    read_done = threading.Event()
    real_read = older._committed

    def slow_read(keys):   # the older commit reads the group's offsets, then stalls before committing
        offsets = real_read(keys)
        read_done.set()
        time.sleep(1.0)
        return offsets

    older._committed = slow_read   # type: ignore[method-assign]
    try:
        older.commit({(topic, 0): 10})
        late = threading.Thread(target=older.commit, args=({(topic, 0): 1476},))
        late.start()
        assert read_done.wait(10)
        newer.commit({(topic, 0): 2476})   # must wait for the older read-and-commit to finish
        late.join()
        assert committed_offsets(bootstrap_servers, conn.group_id, topic) == {0: 2476}
    finally:
        older.close()
        newer.close()


def committed_history(caplog: pytest.LogCaptureFixture) -> dict[int, list[int]]:
    """Partition -> every offset committed, in order, from the committer's debug lines."""
    history: dict[int, list[int]] = {}
    for record in caplog.records:
        if record.name == "transforms.kafka.commit" and record.getMessage().startswith("committed "):
            for item in record.getMessage()[len("committed "):].split(", "):   # "t/0@250, t/1@250"
                partition, offset = item.rsplit("/", 1)[1].split("@")
                history.setdefault(int(partition), []).append(int(offset))
    return history


def test_runner_splits_of_a_transactional_drain_leave_no_offset_uncommitted(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection, caplog: pytest.LogCaptureFixture) -> None:
    """Forced splits (`--direct_test_splits`) of the first read bundle while it runs. They need
    `--direct_running_mode=multi_threading`: the default in-memory FnApiRunner runs the bundle
    before the split manager sends its input, so the stage silently processes nothing."""
    source, sink = kafka_topic(2, "tx-forced"), kafka_topic(1, "tx-forced-out")
    committed = produce_transactions(bootstrap_servers, source,
                                     [(1 + i % 7, i % 4 != 1) for i in range(400)], partitions=2)
    splits = {"ReadFromKafka/ReadPartitions": {"timings": [0.3, 0.6, 0.9, 1.2], "fractions": [0.5, 0.5, 0.3, 0.5]}}
    options = [FN_API_RUNNER, f"--direct_test_splits={json.dumps(splits)}", "--direct_running_mode=multi_threading"]
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="transforms.kafka.commit")

    def slowly(record: KafkaRecord | OffsetGap, topic: str) -> OutboundRecord | OffsetGap:
        time.sleep(0.001)   # a bundle long enough to be split while it reads
        return pass_through(record, topic)

    counters = drain(conn, source, sink, to_outbound=slowly, options=options)

    split = [r for r in caplog.records if r.getMessage().startswith("Got split response") and "residual_roots" in
             r.getMessage()]
    assert split, "no split happened: the test did not test splitting"
    assert counters["kafka_read/records"] == len(committed)
    assert values_of(bootstrap_servers, sink) == Counter(committed)
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == end_offsets(bootstrap_servers, source)
    assert all(offsets == sorted(offsets) for offsets in committed_history(caplog).values())


def unbatched(outputs: list, poll_batch: int = ReadSettings.poll_batch) -> list[KafkaRecord | OffsetGap]:
    """The reader's outputs (`RecordBatch`es) as one list, after checking their shape: per poll, at
    most `poll_batch` records of one partition in offset order, then that poll's gaps."""
    out: list[KafkaRecord | OffsetGap] = []
    for batch in outputs:
        assert isinstance(batch, list) and batch
        records = [r for r in batch if isinstance(r, KafkaRecord)]
        assert batch[:len(records)] == records and len(records) <= poll_batch     # records first, then gaps
        sources = [r.position if isinstance(r, KafkaRecord) else r.source for r in batch]
        assert len({(p.topic, p.partition) for p in sources}) == 1
        assert [p.offset for p in sources] == sorted(p.offset for p in sources)
        out += batch
    return out


def read_to_the_end(fn: kafka_read._ReadPartitionFn, spec: PartitionSpec, restriction: PartitionRange,
                    max_calls: int = 1_000) -> list[KafkaRecord | OffsetGap]:
    """Process a restriction like the SDK harness - process, check_done, resume the residual - until
    it is done or (an unbounded read never is) two calls in a row find nothing (the first poll
    after a re-assign may come back empty)."""
    provider, out, idle = _PartitionRestrictions(), [], 0
    for _ in range(max_calls):
        tracker = ThreadsafeRestrictionTracker(provider.create_tracker(restriction))
        new = unbatched([v.value for v in fn.process(spec, watermark_estimator=ManualWatermarkEstimator(None),
                                                     tracker=RestrictionTrackerView(tracker))])
        tracker.check_done()
        out += new
        idle = 0 if new else idle + 1
        deferred = tracker.deferred_status()
        if deferred is None or (restriction.stop == UNBOUNDED_STOP and idle == 2):
            break
        restriction = deferred[0]
    return out


def covered(outputs: list[KafkaRecord | OffsetGap]) -> tuple[tuple[int, int], ...]:
    acked = OffsetRangeSet()
    for out in outputs:
        acked.add(*(out.source if isinstance(out, OffsetGap) else out.position).covered)
    return acked.ranges


def test_a_split_at_any_offset_leaves_no_offset_unacknowledged(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection) -> None:
    """What a runner's split does to a bounded read - primary [0, x), residual [x, end) - for
    every x: markers just below the split point, at the end of either part, aborted runs."""
    source = kafka_topic(1, "tx-split")
    committed = produce_transactions(bootstrap_servers, source, LAYOUT)
    end = end_offsets(bootstrap_servers, source)[0]
    fast = KafkaConnection(bootstrap_servers, group_id=conn.group_id, properties={"fetch.wait.max.ms": "20"})
    fn = kafka_read._ReadPartitionFn(fast, ReadSettings(max_records_per_call=3, poll_timeout_s=0.2))
    spec = PartitionSpec(source, 0, 0, end)
    fn.setup()
    try:
        for x in range(1, end):
            outputs = (read_to_the_end(fn, spec, PartitionRange(source, 0, 0, x))
                       + read_to_the_end(fn, spec, PartitionRange(source, 0, x, end)))
            assert covered(outputs) == ((0, end),), x
            assert [o.value for o in outputs if isinstance(o, KafkaRecord)] == committed, x
    finally:
        fn.teardown()


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


def test_partitions_beyond_the_open_consumer_cap_share_consumers(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """12 partitions, 2 consumers: each re-assigned from one partition to the next, and
    every record still read once, every partition committed to its end."""
    opened: list[dict] = []
    real_consumer = kafka_read.Consumer

    def counting_consumer(config: dict):
        opened.append(config)
        return real_consumer(config)

    monkeypatch.setattr(kafka_read, "Consumer", counting_consumer)
    source, sink = kafka_topic(12, "in"), kafka_topic(1, "out")
    sent = produce(bootstrap_servers, source, 3000, partitions=12)

    counters = drain(conn, source, sink, settings=ReadSettings(max_records_per_call=100, max_open_consumers=2))

    assert len(opened) == 1 + 2   # the planner + the capped pool (one reader instance on the FnApiRunner)
    assert counters["kafka_read/records"] == 3000
    assert values_of(bootstrap_servers, sink) == Counter(sent)
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == end_offsets(bootstrap_servers, source)


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
            tracker = ThreadsafeRestrictionTracker(provider.create_tracker(restriction))
            estimator = ManualWatermarkEstimator(None)
            out = list(fn.process(spec, watermark_estimator=estimator,
                                  tracker=RestrictionTrackerView(tracker)))
            residual, delay = tracker.deferred_status()
            return out, estimator.current_watermark(), residual, delay

        first, watermark, residual, delay = resume(provider.initial_restriction(spec))
        records = unbatched([r.value for r in first])
        assert [r.position.offset for r in records] == list(range(20))
        assert records[5].timestamp_ms == base_ms + 5
        assert first[0].timestamp == Timestamp(micros=base_ms * 1000)      # a batch is as old as its oldest record
        assert (residual.start, residual.stop, delay) == (20, UNBOUNDED_STOP, Duration(0))
        assert watermark == Timestamp(micros=(base_ms + 19) * 1000) - Duration(1.0)   # the newest, less the slack

        second, watermark, residual, delay = resume(residual)
        records = unbatched([r.value for r in second])
        assert [r.position.offset for r in records] == list(range(20, 30))
        assert records[0].position.covers_from == 20
        assert residual.start == 30
        assert Duration(0.2) < delay <= Duration(0.25)  # caught up: resume later
        assert watermark >= Timestamp.now() - Duration(5)  # idle: tracks wall time

        idle, _, residual, _ = resume(residual)
        assert idle == [] and residual.start == 30
        assert provider.restriction_size(spec, residual) == 0  # no backlog
        assert provider.truncate(spec, residual) is None  # a drain stops the read
    finally:
        fn.teardown()


class SplitWhenClaiming(RestrictionTrackerView):
    """A runner splitting a running read: `try_split(fraction)` as soon as `offset` is claimed."""

    def __init__(self, tracker: ThreadsafeRestrictionTracker, offset: int, fraction: float) -> None:
        super().__init__(tracker)
        self.offset, self.fraction, self.split = offset, fraction, None

    def try_claim(self, position: int) -> bool:
        claimed = super().try_claim(position)
        if position == self.offset:
            self.split = self._threadsafe_restriction_tracker.try_split(self.fraction)
        return claimed


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.5, 0.99, 1.0])
def test_the_unbounded_read_splits_at_any_fraction_within_the_backlog(
        bootstrap_servers: str, kafka_topic, conn: KafkaConnection, fraction: float) -> None:
    """Beam's OffsetRestrictionTracker would split [150, 2**63-1) at 0.5 near 2**62: the residual's
    consumer resets to offset 0, try_claim(0) raises, the bundle fails on every retry."""
    topic = kafka_topic(1, "grow")
    produce(bootstrap_servers, topic, 400, partitions=1)
    fn = _ReadUnboundedPartitionFn(conn, ReadSettings(max_records_per_call=100))
    spec = PartitionSpec(topic, 0, 0, UNBOUNDED_STOP)
    provider = _PartitionRestrictions()
    fn.setup()
    try:
        first = read_to_the_end(fn, spec, provider.initial_restriction(spec), max_calls=1)  # caches the end, 400
        tracker = ThreadsafeRestrictionTracker(provider.create_tracker(PartitionRange(topic, 0, 100, UNBOUNDED_STOP)))
        runner = SplitWhenClaiming(tracker, 149, fraction)
        second = unbatched([v.value for v in fn.process(spec, watermark_estimator=ManualWatermarkEstimator(None),
                                                        tracker=runner)])
        tracker.check_done()
        primary, residual = runner.split
        split_at = 150 if fraction == 0 else 149 + max(1, int((400 - 149) * fraction))
        assert (primary.start, primary.stop) == (100, split_at)
        assert (residual.start, residual.stop) == (split_at, UNBOUNDED_STOP)
        deferred = tracker.deferred_status()
        rest = (read_to_the_end(fn, spec, deferred[0]) if deferred else []) + read_to_the_end(fn, spec, residual)
        outputs = first + second + rest
        assert [o.position.offset for o in outputs] == list(range(400))   # each once, none lost
        assert covered(outputs) == ((0, 400),)
    finally:
        fn.teardown()
