"""ReadFromKafka construction and the bounded plan (no broker needed)."""
from __future__ import annotations

import apache_beam as beam
import pytest

from transforms.kafka.connection import KafkaConnection
from transforms.kafka.read import ReadFromKafka, plan_stops
from transforms.kafka.records import PartitionSpec

CONN = KafkaConnection("127.0.0.1:1", group_id="g")  # nothing listens: construction must not connect


def specs(*ranges: tuple) -> list:
    return [PartitionSpec("t", p, start, stop) for p, (start, stop) in enumerate(ranges)]


def test_max_records_fills_partitions_in_order() -> None:
    plan = plan_stops(specs((10, 20), (0, 5), (3, 103)), max_records=18)
    assert [(s.start, s.stop) for s in plan] == [(10, 20), (0, 5), (3, 6)]


def test_no_cap_keeps_the_plan_and_a_large_cap_reads_everything() -> None:
    plan = specs((0, 7), (2, 4))
    assert plan_stops(plan, None) == plan
    assert plan_stops(plan, 1000) == plan
    assert [(s.start, s.stop) for s in plan_stops(plan, 0)] == [(0, 0), (2, 2)]


def test_construction_validates_without_touching_kafka() -> None:
    with pytest.raises(ValueError, match="group"):
        ReadFromKafka(KafkaConnection("127.0.0.1:1"), "t")
    with pytest.raises(ValueError, match="bounded"):
        ReadFromKafka(CONN, "t", max_records=10)
    pipeline = beam.Pipeline()
    records = pipeline | ReadFromKafka(CONN, "t", bounded=False)
    assert not records.is_bounded
    assert (pipeline | "Bounded" >> ReadFromKafka(CONN, "t", bounded=True)).is_bounded
