"""Consumer-group lag read from Kafka alone: committed, end offsets and the oldest unprocessed event.

Used by the exporter (lag and oldest-uncommitted age gauges), the live
progress line and `python -m pipelines.status`. The probe's consumer only
assigns partitions and never subscribes or commits, so it does not join or
disturb the group.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, TopicPartition

from transforms.kafka.connection import KafkaConnection, consumer_config, with_retries
from transforms.monitoring import metrics
from transforms.monitoring.telemetry import Telemetry


class KafkaUnreachable(RuntimeError):
    """The broker did not answer a metadata request in time."""


class TopicMissing(LookupError):
    """The topic does not exist (or has no readable partitions)."""


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None       # None: the group has no committed offset here
    low: int                       # log start offset
    end: int                       # high watermark
    oldest_ts_ms: int | None    # Kafka timestamp of the record at `position` (None: not fetched / no lag)

    @property
    def position(self) -> int:
        """Where the group resumes: its committed offset, or the log start (what the job plans too)."""
        c = self.committed
        return c if c is not None and self.low <= c <= self.end else self.low

    @property
    def lag(self) -> int:
        return max(0, self.end - self.position)

    def oldest_age_s(self, now_s: float) -> float | None:
        if self.lag == 0:
            return 0.0
        return None if self.oldest_ts_ms is None else max(0.0, now_s - self.oldest_ts_ms / 1000)


class LagProbe:
    """One consumer, reused across samples; a sample costs 2 + partitions requests (+ one fetch)."""

    def __init__(self, conn: KafkaConnection, topic: str, timeout_s: float = 5.0, retry_s: float = 0.0) -> None:
        """`retry_s` > 0 retries transient errors (e.g. a fresh broker's coordinator loading)."""
        config = consumer_config(conn)
        config.update({"log_level": 0, "enable.partition.eof": False})  # errors surface as exceptions
        self._consumer = Consumer(config)
        self._topic, self._timeout_s, self._servers = topic, timeout_s, conn.bootstrap_servers
        self._retry_s = retry_s

    def close(self) -> None:
        self._consumer.close()

    def sample(self, with_age: bool = True) -> list[PartitionLag]:
        partitions = self._partitions()
        try:
            committed = with_retries(lambda: self._consumer.committed(partitions, timeout=self._timeout_s),
                                     timeout_s=self._retry_s)
            marks = {tp.partition: self._consumer.get_watermark_offsets(tp, timeout=self._timeout_s, cached=False)
                     for tp in partitions}
        except KafkaException as e:
            raise KafkaUnreachable(f"Kafka at {self._servers}: {_reason(e)}") from None
        lags = [PartitionLag(self._topic, tp.partition, None if tp.offset == OFFSET_INVALID else tp.offset,
                             marks[tp.partition][0], marks[tp.partition][1], None) for tp in committed]
        if not with_age:
            return lags
        stamps = self._oldest_timestamps({lag.partition: lag.position for lag in lags if lag.lag})
        return [PartitionLag(lag.topic, lag.partition, lag.committed, lag.low, lag.end, stamps.get(lag.partition))
                for lag in lags]

    def _partitions(self) -> list[TopicPartition]:
        try:
            metadata = self._consumer.list_topics(self._topic, timeout=self._timeout_s)
        except KafkaException as e:
            raise KafkaUnreachable(f"Kafka at {self._servers} is not reachable within "
                                   f"{self._timeout_s:g} s ({_reason(e)})") from None
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise TopicMissing(f"topic {self._topic!r} does not exist on {self._servers}")
        return [TopicPartition(self._topic, p) for p in sorted(topic.partitions)]

    def _oldest_timestamps(self, positions: dict[int, int]) -> dict[int, int]:
        """Timestamp of the first record at or after each position (fetches at most one batch each)."""
        if not positions:
            return {}
        self._consumer.assign([TopicPartition(self._topic, p, o) for p, o in positions.items()])
        found: dict[int, int] = {}
        deadline = time.monotonic() + self._timeout_s
        try:
            while len(found) < len(positions) and time.monotonic() < deadline:
                for msg in self._consumer.consume(len(positions), timeout=max(0.0, deadline - time.monotonic())):
                    ts_type, ts_ms = msg.timestamp()
                    if msg.error() is None and ts_type != TIMESTAMP_NOT_AVAILABLE:
                        found.setdefault(msg.partition(), ts_ms)
        finally:
            self._consumer.unassign()
        return found


def record(telemetry: Telemetry, lags: list[PartitionLag], now_s: float) -> None:
    """Stores the probe's view as the `kafka_lag` / `oldest_uncommitted_age_s` gauges."""
    lag_gauge = metrics.gauge("kafka_lag", telemetry)
    age_gauge = metrics.gauge("oldest_uncommitted_age_s", telemetry)
    for lag in lags:
        labels = dict(topic=lag.topic, partition=lag.partition)
        lag_gauge.set(lag.lag, **labels)
        age = lag.oldest_age_s(now_s)
        if age is not None:
            age_gauge.set(age, **labels)


def _reason(e: KafkaException) -> str:
    return e.args[0].str() if e.args and hasattr(e.args[0], "str") else str(e)
