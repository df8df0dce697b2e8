"""Small, synchronous Kafka admin helpers for tests and tools (confluent-kafka based).

Every helper waits until the broker's metadata reflects the change, so a test can
use a topic right after create_topic() returns.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic, OffsetSpec

from transforms.kafka.connection import with_retries

_OFFSET_INVALID = -1001  # librdkafka's "no committed offset"
# Failures surface as exceptions; librdkafka's per-retry connect logs would only add noise.
QUIET = {"log_level": 0}


@dataclass(frozen=True)
class Record:
    """One consumed message; `timestamp` is in ms since the epoch."""
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp: int


def admin_client(bootstrap: str, **config: Any) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **QUIET, **config})


def _error_code(exc: KafkaException) -> int | None:
    err = exc.args[0] if exc.args else None
    return err.code() if isinstance(err, KafkaError) else None


def partition_ids(admin: AdminClient, topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of `topic`; raises KafkaException(UNKNOWN_TOPIC_OR_PART) if it is missing."""
    meta = admin.list_topics(topic=topic, timeout=timeout).topics[topic]
    if meta.error is not None:
        raise KafkaException(meta.error)
    return sorted(meta.partitions)


def topic_exists(bootstrap: str, topic: str, timeout: float = 10.0) -> bool:
    return topic in admin_client(bootstrap).list_topics(timeout=timeout).topics


def create_topic(
    bootstrap: str, name: str, partitions: int, replication: int = 1,
    config: dict[str, str] | None = None, timeout: float = 30.0,
) -> None:
    """Create `name` unless it exists, then wait until every partition has a leader.

    An existing topic with a different partition count is an error, not a silent reuse.
    """
    admin = admin_client(bootstrap)
    future = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication, config=config or {})],
        operation_timeout=timeout, request_timeout=timeout,
    )[name]
    try:
        future.result()
    except KafkaException as exc:
        if _error_code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic=name, timeout=timeout).topics[name]
        if meta.error is None and meta.partitions:
            if len(meta.partitions) != partitions:
                raise ValueError(f"topic {name} exists with {len(meta.partitions)} partitions, not {partitions}")
            if all(p.leader >= 0 and p.error is None for p in meta.partitions.values()):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} has no leader for every partition after {timeout} s")
        time.sleep(0.05)


def delete_topic(bootstrap: str, name: str, timeout: float = 30.0, wait: bool = True) -> None:
    """Delete `name` (a missing topic is fine); with `wait`, until the metadata drops it."""
    admin = admin_client(bootstrap)
    try:
        admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)[name].result()
    except KafkaException as exc:
        if _error_code(exc) != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise
    deadline = time.monotonic() + timeout
    while wait and name in admin.list_topics(timeout=timeout).topics:
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} still listed {timeout} s after delete")
        time.sleep(0.05)


def add_partitions(bootstrap: str, topic: str, total: int, timeout: float = 30.0) -> None:
    """Grow `topic` to `total` partitions; returns once the metadata lists them all."""
    admin = admin_client(bootstrap)
    admin.create_partitions([NewPartitions(topic, total)], operation_timeout=timeout,
                            request_timeout=timeout)[topic].result()
    deadline = time.monotonic() + timeout
    while len(partition_ids(admin, topic, timeout)) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic} still has fewer than {total} partitions after {timeout} s")
        time.sleep(0.05)


def group_coordinator_ready(bootstrap: str, timeout: float = 2.0) -> bool:
    """True once group offset fetches and commits work.

    A fresh broker creates __consumer_offsets on the first coordinator lookup and
    answers NOT_COORDINATOR (commit, committed) until its partitions are led and loaded.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "__readiness-probe", **QUIET})
    try:
        consumer.committed([TopicPartition("__readiness-probe", 0)], timeout=timeout)
    except KafkaException:
        return False
    finally:
        consumer.close()
    meta = admin_client(bootstrap).list_topics(topic="__consumer_offsets", timeout=timeout).topics["__consumer_offsets"]
    return meta.error is None and bool(meta.partitions) and all(p.leader >= 0 for p in meta.partitions.values())


def _list_offsets(
    bootstrap: str, topic: str, spec: OffsetSpec, isolation: IsolationLevel, timeout: float,
) -> dict[int, int]:
    admin = admin_client(bootstrap)
    request = {TopicPartition(topic, p): spec for p in partition_ids(admin, topic, timeout)}

    def once() -> dict[int, int]:
        futures = admin.list_offsets(request, isolation_level=isolation, request_timeout=timeout)
        return {tp.partition: future.result().offset for tp, future in futures.items()}

    # Right after create_topic the broker may not yet know itself as the leader.
    return with_retries(once, timeout_s=timeout)


def end_offsets(bootstrap: str, topic: str, committed_only: bool = False, timeout: float = 10.0) -> dict[int, int]:
    """Partition -> high watermark (or the last stable offset with `committed_only`)."""
    isolation = IsolationLevel.READ_COMMITTED if committed_only else IsolationLevel.READ_UNCOMMITTED
    return _list_offsets(bootstrap, topic, OffsetSpec.latest(), isolation, timeout)


def beginning_offsets(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """Partition -> log start offset."""
    return _list_offsets(bootstrap, topic, OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED, timeout)


def committed_offsets(bootstrap: str, group: str, topic: str, timeout: float = 10.0) -> dict[int, int | None]:
    """Partition -> the group's committed offset (next offset to read), None if never committed.

    Asks through a Consumer that never subscribes, not AdminClient: librdkafka
    2.x's AdminClient.list_consumer_group_offsets segfaults (rd_kafka_cgrp_op on a
    handle without a consumer group) when the broker answers "coordinator load
    in progress", as a freshly started broker does.
    """
    partitions = [TopicPartition(topic, p) for p in partition_ids(admin_client(bootstrap), topic, timeout)]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, **QUIET})
    try:
        result = consumer.committed(partitions, timeout=timeout)
    finally:
        consumer.close()
    return {tp.partition: (None if tp.offset == _OFFSET_INVALID else tp.offset) for tp in result}


def _position(msg: Message) -> tuple[int, int]:
    """(partition, offset) of a record or of a partition-EOF event; raises on real errors."""
    err = msg.error()
    if err is not None and err.code() != KafkaError._PARTITION_EOF:
        raise KafkaException(err)
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    return partition, offset


def consume_all(
    bootstrap: str, topic: str, timeout: float = 30.0, read_committed: bool = True,
) -> list[Record]:
    """Every record from the log start up to the end offsets seen at call time.

    Uses assign() with a throwaway group id (no group join, no commits), and treats a
    partition as done on EOF at or past its end offset, so transaction markers at the
    tail cannot stall it. Raises TimeoutError if the end is not reached in `timeout` s.
    """
    targets = end_offsets(bootstrap, topic, committed_only=read_committed, timeout=timeout)
    starts = beginning_offsets(bootstrap, topic, timeout=timeout)
    pending = {p: end for p, end in targets.items() if end > starts[p]}
    if not pending:
        return []
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        **QUIET,
        "group.id": f"consume-all-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "fetch.wait.max.ms": 50,
    })
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in pending])
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"consume_all({topic}): partitions {sorted(pending)} not read to the end in {timeout} s")
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                partition, offset = _position(msg)
                if partition not in pending:
                    continue  # done: later records are outside the snapshot
                if msg.error() is None and offset < pending[partition]:
                    records.append(Record(msg.key(), msg.value(), partition, offset, msg.timestamp()[1]))
                    offset += 1
                if offset >= pending[partition]:  # an EOF event carries the end offset itself
                    del pending[partition]
    finally:
        consumer.close()
    return records
