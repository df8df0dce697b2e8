"""A streaming job's idle partitions keep their committed offsets past the broker's retention.

The group only stores offsets (the reader assigns, never subscribes), so Kafka drops a partition's
offset `offsets.retention.minutes` after its last commit; a partition that gets no input for that
long would restart from its earliest offset. A private broker with a one-minute retention; the
unbounded partition read is driven directly, as a runner would (resume the residual), for longer.
"""
from __future__ import annotations

import time
import uuid

import pytest
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker

from testbed.kafka.admin import committed_offsets, create_topic
from tests.integration.test_kafka_io import drain, produce, unbatched
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.read import UNBOUNDED_STOP, ReadSettings, _PartitionRestrictions, _ReadUnboundedPartitionFn
from transforms.kafka.records import PartitionSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RETENTION = {"offsets.retention.minutes": 1, "offsets.retention.check.interval.ms": 1000}


def read_idle_for(conn: KafkaConnection, topic: str, start: int, seconds: float, settings: ReadSettings) -> int:
    """Resumes the unbounded read of partition 0 for `seconds`; returns the records it read."""
    fn = _ReadUnboundedPartitionFn(conn, settings)
    provider = _PartitionRestrictions()
    spec = PartitionSpec(topic, 0, start, UNBOUNDED_STOP)
    restriction, read, deadline = provider.initial_restriction(spec), 0, time.monotonic() + seconds
    fn.setup()
    try:
        while time.monotonic() < deadline:
            tracker = ThreadsafeRestrictionTracker(provider.create_tracker(restriction))
            read += len(unbatched([v.value for v in fn.process(spec, watermark_estimator=ManualWatermarkEstimator(None),
                                                               tracker=RestrictionTrackerView(tracker))]))
            restriction = tracker.deferred_status()[0]
    finally:
        fn.teardown()
    return read


def test_an_idle_partition_keeps_its_committed_offset_past_the_retention(kafka_broker_factory) -> None:
    broker = kafka_broker_factory(extra_properties=RETENTION)
    bootstrap = broker.bootstrap_servers
    source, sink = f"idle-{uuid.uuid4().hex[:8]}", f"idle-out-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, source, 1)
    create_topic(bootstrap, sink, 1)
    produce(bootstrap, source, 10, partitions=1)
    streaming = KafkaConnection(bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}")
    forgotten = KafkaConnection(bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}")
    drain(streaming, source, sink)
    drain(forgotten, source, sink)
    assert committed_offsets(bootstrap, streaming.group_id, source) == {0: 10}

    read = read_idle_for(streaming, source, 10, seconds=75, settings=ReadSettings(offset_refresh_s=10))

    assert read == 0
    assert committed_offsets(bootstrap, forgotten.group_id, source) == {0: None}   # the broker does expire
    assert committed_offsets(bootstrap, streaming.group_id, source) == {0: 10}
