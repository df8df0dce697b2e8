"""KafkaRecord -> ParsedEvent, or a dead letter with the reason it could not be parsed.

Both travel in one PCollection: on the FnApiRunner a Flatten (needed to merge
tagged outputs before the single Kafka writer) breaks stage fusion, and an
unfused drain reads the whole backlog into memory before scoring any of it.
"""
from __future__ import annotations

from typing import Iterator, Union

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.events import InvalidEvent, ParsedEvent, parse_event
from transforms.outputs import DeadLetter
from transforms.records import KafkaRecord
from transforms.telemetry import TELEMETRY



class _ParseFn(beam.DoFn):
    def __init__(self) -> None:
        self._events_in = Metrics.counter("enrich", "events_in")
        self._valid = Metrics.counter("enrich", "events_valid")
        self._invalid = Metrics.counter("enrich", "parse_dead_letters")

    def process(self, record: KafkaRecord) -> Iterator[Union[ParsedEvent, DeadLetter]]:
        self._events_in.inc()
        TELEMETRY.inc("events_in")
        try:
            event = parse_event(record.value)
        except InvalidEvent as e:
            self._invalid.inc()
            TELEMETRY.inc("parse_dead_letters")
            yield DeadLetter(reason=str(e), stage="parse", payload=record.value, source=record.position)
            return
        self._valid.inc()
        TELEMETRY.inc("events_valid")
        yield ParsedEvent(event, record.value or b"", record.position, record.timestamp_ms)


class ParseEvents(beam.PTransform):
    """KafkaRecord -> ParsedEvent | DeadLetter."""

    def expand(self, records):
        return records | "Parse" >> beam.ParDo(_ParseFn())
