"""Where a new group starts, what a far-future timestamp does, and a commit Kafka refuses.

Real broker, FnApiRunner, the pass-through drain of `test_kafka_io`.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from testbed.kafka.admin import committed_offsets, end_offsets
from tests.integration.test_kafka_io import PARTITIONS, drain, produce, values_of
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.start import StartPosition

pytestmark = pytest.mark.integration


def group(bootstrap: str, **properties: str) -> KafkaConnection:
    return KafkaConnection(bootstrap, group_id=f"g-{uuid.uuid4().hex[:12]}", properties=properties)


def test_a_far_future_producer_timestamp_is_read_not_fatal(bootstrap_servers: str, kafka_topic) -> None:
    """A topic may accept any timestamp (`message.timestamp.after.max.ms` raised); Beam's range ends
    near 9.2e15 ms. Before the clamp: OverflowError, the drain failed."""
    source = kafka_topic(1, "future-in", config={"message.timestamp.after.max.ms": str(2**63 - 1)})
    sink = kafka_topic(1, "future-out")
    sent = produce(bootstrap_servers, source, 500, partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    producer.produce(source, value=b"from-the-future", timestamp=9_300_000_000_000_000)
    assert producer.flush(30) == 0
    conn = group(bootstrap_servers)

    counters = drain(conn, source, sink)

    assert values_of(bootstrap_servers, sink) == Counter([*sent, b"from-the-future"])
    assert counters["kafka_read/clamped_timestamps"] == 1
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == {0: 501}


@pytest.mark.parametrize("how", ["option", "auto.offset.reset"])
def test_a_new_group_can_start_at_the_end(bootstrap_servers: str, kafka_topic, how: str) -> None:
    source, sink = kafka_topic(PARTITIONS, "latest-in"), kafka_topic(PARTITIONS, "latest-out")
    produce(bootstrap_servers, source, 400)
    if how == "option":
        conn, start = group(bootstrap_servers), StartPosition.parse("latest")
    else:
        conn, start = group(bootstrap_servers, **{"auto.offset.reset": "latest"}), None

    first = drain(conn, source, sink, start=start)

    assert first["kafka_read/records"] == 0
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == end_offsets(bootstrap_servers, source)
    later = produce(bootstrap_servers, source, 40)
    second = drain(conn, source, sink, start=start)
    assert second["kafka_read/records"] == 40
    assert values_of(bootstrap_servers, sink) == Counter(later)


def test_a_new_group_can_start_at_a_time(bootstrap_servers: str, kafka_topic) -> None:
    """Value i has timestamp base + i: starting at base + 300 reads values 300..399 only."""
    source, sink = kafka_topic(PARTITIONS, "at-in"), kafka_topic(PARTITIONS, "at-out")
    base_ms = int(time.time() * 1000) - 60_000
    sent = produce(bootstrap_servers, source, 400, base_ms=base_ms)
    conn = group(bootstrap_servers)

    counters = drain(conn, source, sink, start=StartPosition.parse(str(base_ms + 300)))

    assert counters["kafka_read/records"] == 100
    assert values_of(bootstrap_servers, sink) == Counter(sent[300:])
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == end_offsets(bootstrap_servers, source)


def test_a_group_committed_before_keeps_its_offsets_whatever_the_start(bootstrap_servers: str, kafka_topic) -> None:
    source, sink = kafka_topic(PARTITIONS, "kept-in"), kafka_topic(PARTITIONS, "kept-out")
    sent = produce(bootstrap_servers, source, 400)
    conn = group(bootstrap_servers)
    drain(conn, source, sink, max_records=100)   # all of p0

    drain(conn, source, sink, start=StartPosition.parse("latest"))

    assert values_of(bootstrap_servers, sink) == Counter(sent)


def test_auto_offset_reset_error_refuses_a_group_without_offsets(bootstrap_servers: str, kafka_topic) -> None:
    source = kafka_topic(PARTITIONS, "none-in")
    produce(bootstrap_servers, source, 8)
    conn = group(bootstrap_servers, **{"auto.offset.reset": "error"})
    with pytest.raises(Exception, match="has no committed offset.*auto.offset.reset=error"):
        drain(conn, source, "unused")


def test_a_commit_kafka_refuses_fails_the_drain(bootstrap_servers: str, kafka_topic) -> None:
    """Another application subscribed with the same group id: Kafka refuses commits from outside
    the group (UNKNOWN_MEMBER_ID). Before the fix the drain logged it and exited cleanly, with
    nothing committed."""
    source, sink = kafka_topic(PARTITIONS, "refused-in"), kafka_topic(PARTITIONS, "refused-out")
    produce(bootstrap_servers, source, 400)
    conn = group(bootstrap_servers)
    setter = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": conn.group_id})
    setter.commit(offsets=[TopicPartition(source, p, 0) for p in range(PARTITIONS)], asynchronous=False)
    setter.close()
    member = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": conn.group_id,
                       "enable.auto.commit": False})
    member.subscribe([source])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        assert member.assignment(), "the other member never joined"
        with pytest.raises(Exception, match="offset commit .* failed"):
            drain(conn, source, sink)
    finally:
        member.close()
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == {p: 0 for p in range(PARTITIONS)}

