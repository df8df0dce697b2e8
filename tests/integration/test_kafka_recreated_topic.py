"""A topic deleted and recreated under a job (or a partition whose end moved back): the job ends
with one line naming the topic instead of failing and restarting for ever, or silently
re-reading from an offset its group never committed."""
from __future__ import annotations

import time
import uuid

import pytest
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from confluent_kafka import Consumer, TopicPartition

from testbed.kafka.admin import committed_offsets, create_topic, delete_topic
from tests.integration.test_kafka_io import drain, produce, unbatched
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.read import UNBOUNDED_STOP, ReadSettings, _PartitionRestrictions, _ReadUnboundedPartitionFn
from transforms.kafka.records import PartitionSpec

pytestmark = pytest.mark.integration

MESSAGE = "was deleted and recreated, or truncated"


def recreate(bootstrap: str, topic: str) -> None:
    delete_topic(bootstrap, topic)
    deadline = time.monotonic() + 60
    while True:   # the broker refuses to create it again until the deletion is complete
        try:
            create_topic(bootstrap, topic, 1)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_drain_after_the_topic_was_recreated_starts_the_new_log(bootstrap_servers: str) -> None:
    """Kafka deletes a group's offsets with their topic: the next drain is a new group's first."""
    source, sink = f"re-{uuid.uuid4().hex[:8]}", f"re-out-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap_servers, source, 1)
    create_topic(bootstrap_servers, sink, 1)
    produce(bootstrap_servers, source, 20, partitions=1)
    conn = KafkaConnection(bootstrap_servers, group_id=f"g-{uuid.uuid4().hex[:8]}")
    drain(conn, source, sink)
    recreate(bootstrap_servers, source)
    produce(bootstrap_servers, source, 5, partitions=1)

    assert drain(conn, source, sink)["kafka_read/records"] == 5
    assert committed_offsets(bootstrap_servers, conn.group_id, source) == {0: 5}


def test_a_drain_refuses_a_committed_offset_past_the_end(bootstrap_servers: str) -> None:
    """A log that moved back under its group (truncated, or offsets restored from elsewhere)."""
    source = f"re-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap_servers, source, 1)
    produce(bootstrap_servers, source, 5, partitions=1)
    conn = KafkaConnection(bootstrap_servers, group_id=f"g-{uuid.uuid4().hex[:8]}")
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": conn.group_id})
    consumer.commit(offsets=[TopicPartition(source, 0, 100)], asynchronous=False)
    consumer.close()

    with pytest.raises(Exception, match=f"{source}/0: the group's committed offset 100 is past the partition's "
                                        f"end 5: the topic {MESSAGE}"):
        drain(conn, source, "unused")


def test_a_streaming_read_stops_when_its_partition_moves_back(bootstrap_servers: str) -> None:
    source = f"re-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap_servers, source, 1)
    produce(bootstrap_servers, source, 20, partitions=1)
    conn = KafkaConnection(bootstrap_servers, group_id=f"g-{uuid.uuid4().hex[:8]}")
    fn, provider = _ReadUnboundedPartitionFn(conn, ReadSettings()), _PartitionRestrictions()
    spec = PartitionSpec(source, 0, 0, UNBOUNDED_STOP)

    def resume(restriction):
        tracker = ThreadsafeRestrictionTracker(provider.create_tracker(restriction))
        out = unbatched([v.value for v in fn.process(spec, watermark_estimator=ManualWatermarkEstimator(None),
                                                     tracker=RestrictionTrackerView(tracker))])
        return out, tracker.deferred_status()[0]

    fn.setup()
    try:
        out, residual = resume(provider.initial_restriction(spec))
        assert len(out) == 20 and residual.start == 20
        recreate(bootstrap_servers, source)
        produce(bootstrap_servers, source, 5, partitions=1)
        with pytest.raises(Exception, match=f"{source}/0: the partition's offsets went back from 20 to 0: the topic {MESSAGE}"):
            for _ in range(20):   # the consumer learns of the new topic within a few polls
                out, residual = resume(residual)
                assert out == [], "records of the new topic were read at offsets of the old one"
    finally:
        fn.teardown()
