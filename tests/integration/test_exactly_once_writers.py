"""The transactional writer's producers within one worker process, driven like a runner would:
several instances of the DoFn (one per bundle processor) take turns on one input partition."""
from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from testbed.kafka.admin import committed_offsets, consume_all, create_topic
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.exactly_once import FencedError, _TransactionalWriteFn
from transforms.kafka.records import OutboundRecord, SourcePosition

pytestmark = pytest.mark.integration


class _Bag:
    """Keyed bag state of one key, as the runner would hand it to the DoFn."""

    def __init__(self) -> None:
        self.items: list = []

    def read(self) -> list:
        return list(self.items)

    def add(self, item) -> None:
        self.items.append(item)

    def clear(self) -> None:
        self.items = []


def bundle(fn: _TransactionalWriteFn, source: str, sink: str, offsets: range, state: _Bag) -> None:
    fn.start_bundle()
    for o in offsets:
        record = OutboundRecord(sink, None, b"%d" % o, SourcePosition(source, 0, o, o))
        list(fn.process((f"{source}/0", record), waiting_state=state))
    list(fn.finish_bundle())


def start_group(bootstrap: str, group: str, topic: str) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    consumer.close()


def test_writer_instances_taking_turns_on_a_partition_do_not_fence_each_other(bootstrap_servers: str) -> None:
    """Before: the second instance's init_transactions fenced the first one's producer, and the
    first then failed with FencedError and refused the whole group for the life of the process."""
    source, sink = f"eo-in-{uuid.uuid4().hex[:8]}", f"eo-out-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap_servers, source, 1)
    create_topic(bootstrap_servers, sink, 1)
    conn = KafkaConnection(bootstrap_servers, group_id=f"g-{uuid.uuid4().hex[:8]}")
    start_group(bootstrap_servers, conn.group_id, source)
    first, second = (_TransactionalWriteFn(conn, 10.0, 120_000) for _ in range(2))
    state = _Bag()
    for fn in (first, second):
        fn.setup()
    try:
        bundle(first, source, sink, range(0, 10), state)
        bundle(second, source, sink, range(10, 20), state)
        bundle(first, source, sink, range(20, 30), state)
    finally:
        for fn in (first, second):
            fn.teardown()
    assert sorted(int(r.value) for r in consume_all(bootstrap_servers, sink)) == list(range(30))
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == {0: 30}


def test_a_writer_fenced_by_another_job_says_so_and_only_for_its_partition(bootstrap_servers: str) -> None:
    """A second job with the same group fences the first: the bundle fails saying so, for that
    partition only; a retry takes the partition back (before: refused for the life of the process)."""
    source, sink = f"eo-in-{uuid.uuid4().hex[:8]}", f"eo-out-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap_servers, source, 1)
    create_topic(bootstrap_servers, sink, 1)
    conn = KafkaConnection(bootstrap_servers, group_id=f"g-{uuid.uuid4().hex[:8]}")
    start_group(bootstrap_servers, conn.group_id, source)
    ours = _TransactionalWriteFn(conn, 10.0, 120_000)
    ours.setup()
    try:
        bundle(ours, source, sink, range(0, 10), _Bag())
        other = Producer({"bootstrap.servers": bootstrap_servers, "transactional.id": f"{conn.group_id}.{source}.0"})
        other.init_transactions(30)   # the other job's writer of the same partition
        with pytest.raises(FencedError, match=f"transactional.id '{conn.group_id}.{source}.0' was taken over by another writer"):
            bundle(ours, source, sink, range(10, 20), _Bag())
        bundle(ours, source, sink, range(10, 20), _Bag())   # retried: takes the partition back
    finally:
        ours.teardown()
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == {0: 20}


def test_a_record_covering_from_below_the_committed_frontier_is_written(bootstrap_servers: str) -> None:
    """After a restore from an older checkpoint the reader resumes below a gap the frontier already
    covers (a commit marker at offset 9): its next record, offset 10, covers from 9. Before: it
    waited in state for offset 9 for ever, and so did every later record of the partition."""
    source, sink = f"eo-in-{uuid.uuid4().hex[:8]}", f"eo-out-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap_servers, source, 1)
    create_topic(bootstrap_servers, sink, 1)
    conn = KafkaConnection(bootstrap_servers, group_id=f"g-{uuid.uuid4().hex[:8]}")
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": conn.group_id})
    consumer.commit(offsets=[TopicPartition(source, 0, 10)], asynchronous=False)
    consumer.close()
    fn, state = _TransactionalWriteFn(conn, 10.0, 120_000), _Bag()
    fn.setup()
    try:
        fn.start_bundle()
        for offset, covers_from in ((10, 9), (11, 11), (12, 12)):
            record = OutboundRecord(sink, None, b"%d" % offset, SourcePosition(source, 0, offset, covers_from))
            list(fn.process((f"{source}/0", record), waiting_state=state))
        list(fn.finish_bundle())
    finally:
        fn.teardown()
    assert sorted(int(r.value) for r in consume_all(bootstrap_servers, sink)) == [10, 11, 12]
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == {0: 13}
    assert state.items == []
