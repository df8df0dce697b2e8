"""Records on their way through the Kafka job: `ParseEvents` (the contract's schema applied to each
record), `ParsedEvent` (what enrichment gets) and `DeadLetter` (what an earlier stage refused).

Anything that is not a well-formed event becomes a dead letter with the reason
`invalid_event` and a one-line detail, so nothing is dropped silently and no
input can fail a bundle (which the runner would retry, with the same input,
forever). Valid events and dead letters travel in one PCollection: on the
FnApiRunner a Flatten (needed to merge tagged outputs before the single Kafka
writer) breaks stage fusion, and an unfused drain reads the whole backlog into
memory before enriching any of it.

`EventList` is the type hint of those lists where Beam encodes them - to sample
their sizes, and in front of the stateful enrichment step - and `EventListCoder`
the coder Beam's registry gives for it. Beam's default for a list of arbitrary
objects pickles each element: 6 us per parsed event. msgspec writes the same
events as MessagePack in a tenth of that. It must give back exactly what it was
given, of the same types, whatever the contract: an event's values are decoded
JSON, which MessagePack holds as it is, but a field's default may be any YAML
value (a date, say), and JSON's integers are unbounded. So every list is decoded
once more when it is encoded and compared with what it came from; events that do
not come back equal, and whatever is not a `ParsedEvent` (dead letters, skipped
offsets), are pickled beside it with their positions in the list.
"""
from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import msgspec
from apache_beam import coders
from apache_beam.utils.timestamp import Timestamp

from transforms.contract.fields import brief
from transforms.contract.schema import Event, EventSchema, InvalidEvent
from transforms.kafka.records import OffsetGap, RecordBatch, SourcePosition, placed_among
from transforms.monitoring import metrics
from transforms.monitoring.services import NO_SERVICES, WorkerServices

_LOG = logging.getLogger(__name__)


class ParsedEvent(msgspec.Struct, frozen=True, gc=False):
    """A valid event with the bytes it came from, its Kafka position and key (a replayed dead
    letter goes back under the same key, so to the same partition). Holds no reference cycle, so
    the garbage collector need not track it."""
    event: Event
    raw: bytes
    source: SourcePosition
    timestamp_ms: int
    record_key: bytes | None = None


def event_of(parsed: ParsedEvent) -> Event:
    return parsed.event


def shard_key_of(parsed: ParsedEvent) -> str:
    return parsed.event.key


def size_of(parsed: ParsedEvent) -> int:
    return len(parsed.raw)


def timestamp_of(parsed: ParsedEvent) -> Timestamp:
    return Timestamp(micros=parsed.timestamp_ms * 1000)


class DeadLetter(msgspec.Struct, frozen=True):
    reason: str                    # a short code: `invalid_event`, or enrichment's (outcomes.py)
    detail: str                    # one line for people
    stage: str                     # "parse" or "enrich"
    payload: bytes | None
    source: SourcePosition
    id: str | None = None
    attempts: int = 0
    last_status: int | None = None
    record_key: bytes | None = None   # the input record's key


class SkippedOffsets(DeadLetter, frozen=True):
    """Offsets without a record (the reader's `OffsetGap`) on their way to the writer.

    Not a letter: nothing is written for it. It subclasses DeadLetter only to take the
    path dead letters already take - enrichment passes them through unchanged - and
    `outputs.RecordEncoder` hands the gap back to the writer, which acknowledges it.
    """

    @classmethod
    def of(cls, gap: OffsetGap) -> SkippedOffsets:
        return cls(reason="skipped", detail="offsets without a record", stage="read", payload=None,
                   source=gap.source)

    @property
    def gap(self) -> OffsetGap:
        return OffsetGap(self.source)


#: The events that MessagePack holds exactly, and the pickled (position, element) pairs of the rest.
_Encoded = tuple[list[ParsedEvent], bytes]
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Encoded)


class EventList(list):  # type: ignore[type-arg]
    """The type hint of the job's lists of ParsedEvent | DeadLetter - the parse step's output, and one
    shard's list at the enrichment's keyed boundary (`ThrottledEnrichment(shard_list_type=EventList)`) -
    for which Beam's coder registry gives `EventListCoder`. The lists themselves are plain lists."""


class EventListCoder(coders.Coder):
    """MessagePack for the events that come back exactly, pickle for the rest (see the module docstring)."""

    def encode(self, value: list[Any]) -> bytes:
        events = [element for element in value if element.__class__ is ParsedEvent]
        whole = _exact(events)   # a poll's events with its gap (a transactional topic's marker) go at once
        if whole is not None and len(events) == len(value):
            return whole
        fast: list[ParsedEvent] = []
        rest: list[tuple[int, Any]] = []
        for i, element in enumerate(value):
            if element.__class__ is ParsedEvent and (whole is not None or _exact([element]) is not None):
                fast.append(element)
            else:
                rest.append((i, element))
        return _ENCODER.encode((fast, pickle.dumps(rest, pickle.HIGHEST_PROTOCOL)))

    def decode(self, encoded: bytes) -> list[Any]:
        fast, pickled = _DECODER.decode(encoded)
        return placed_among(fast, pickle.loads(pickled)) if pickled else fast

    def estimate_size(self, value: list[Any]) -> int:
        """What Beam samples sizes with: the events' MessagePack, without the check that they come
        back exactly (a decode and a comparison: that is for what is sent), and the rest pickled."""
        events = [element for element in value if element.__class__ is ParsedEvent]
        try:
            size = len(_ENCODER.encode((events, b"")))
        except (TypeError, ValueError, OverflowError):
            return len(self.encode(value))
        rest = [element for element in value if element.__class__ is not ParsedEvent]
        return size + len(pickle.dumps(rest, pickle.HIGHEST_PROTOCOL)) if rest else size

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return EventList


def _exact(events: list[ParsedEvent]) -> bytes | None:
    """`events` encoded, if they decode to what they are; None if not (or if MessagePack cannot hold them)."""
    try:
        data = _ENCODER.encode((events, b""))
    except (TypeError, ValueError, OverflowError):   # a type it has no form for, a lone surrogate, a long int
        return None
    return data if _DECODER.decode(data)[0] == events else None


coders.registry.register_coder(EventList, EventListCoder)


_EVENTS_IN = metrics.counter("events_in")
_EVENTS_VALID = metrics.counter("events_valid")
_PARSE_DEAD_LETTERS = metrics.counter("parse_dead_letters")


class _ParseFn(beam.DoFn):
    """One `RecordBatch` -> one list of what its records became, in the same order."""

    def __init__(self, schema: EventSchema, services: WorkerServices) -> None:
        self._schema, self._services = schema, services

    def setup(self) -> None:
        self._parse = self._schema.parser.parse
        self._services.start()

    def process(self, batch: RecordBatch) -> Iterator[list[ParsedEvent | DeadLetter]]:
        out: list[ParsedEvent | DeadLetter] = []
        valid = invalid = 0
        for record in batch:
            if isinstance(record, OffsetGap):
                out.append(SkippedOffsets.of(record))
                continue
            try:
                event = self._parse(record.value)
            except InvalidEvent as e:
                detail = str(e)
            except Exception as e:  # a parser bug costs one dead letter, not a bundle that fails on every retry
                detail = f"parser error: {type(e).__name__}: {brief(str(e))}"
                _LOG.error("parsing raised %s on %s/%d@%d; dead-lettered", type(e).__name__,
                           record.position.topic, record.position.partition, record.position.offset, exc_info=True)
            else:
                valid += 1
                out.append(ParsedEvent(event, record.value or b"", record.position, record.timestamp_ms, record.key))
                continue
            invalid += 1
            out.append(DeadLetter(reason="invalid_event", detail=detail, stage="parse", payload=record.value,
                                  source=record.position, record_key=record.key))
        _EVENTS_IN.inc(valid + invalid)
        _EVENTS_VALID.inc(valid)
        if invalid:
            _PARSE_DEAD_LETTERS.inc(invalid)
        yield out


class ParseEvents(beam.PTransform):
    """RecordBatch -> list of ParsedEvent | DeadLetter (an OffsetGap -> SkippedOffsets), by the contract's schema.
    Starts the worker's `services` (metrics endpoint, export) where it runs."""

    def __init__(self, schema: EventSchema, services: WorkerServices = NO_SERVICES) -> None:
        super().__init__()
        self._schema, self._services = schema, services

    def expand(self, records):
        return records | "Parse" >> beam.ParDo(_ParseFn(self._schema, self._services)).with_output_types(EventList)
