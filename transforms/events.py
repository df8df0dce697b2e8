"""Payment events on their way through the job: the schema and its validation, `ParseEvents`
(the step that applies it), and what scoring turns a parsed event into (`ScoredEvent` or `DeadLetter`).

Anything that is not a well-formed event raises `InvalidEvent` with a one-line
reason, and `ParseEvents` turns it into a dead letter, so nothing is dropped
silently and no input can fail a bundle (which the runner would retry, with
the same input, forever). Valid events and dead letters travel in one
PCollection: on the FnApiRunner a Flatten (needed to merge tagged outputs
before the single Kafka writer) breaks stage fusion, and an unfused drain
reads the whole backlog into memory before scoring any of it.
"""
from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import apache_beam as beam
import msgspec

from transforms.kafka.records import KafkaRecord, OffsetGap, SourcePosition
from transforms.monitoring import metrics

_LOG = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_AMOUNT = 1_000_000.0
_CURRENCY = re.compile(r"[A-Z]{3}")
_STRING_FIELDS = ("txn_id", "account_id", "card_id", "merchant", "currency", "event_time")
REQUIRED_FIELDS = _STRING_FIELDS + ("amount",)


class InvalidEvent(ValueError):
    """A message that cannot be scored; `str(e)` is the dead-letter reason."""


class PaymentEvent(msgspec.Struct, frozen=True):
    txn_id: str
    account_id: str
    card_id: str
    merchant: str
    amount: float
    currency: str
    event_time: str


class ParsedEvent(msgspec.Struct, frozen=True):
    """A valid event with the bytes it came from and its Kafka position."""
    event: PaymentEvent
    raw: bytes
    source: SourcePosition
    timestamp_ms: int


class ScoredEvent(msgspec.Struct, frozen=True):
    parsed: ParsedEvent
    score: float
    decision: str
    model_version: str
    enrichment_latency_ms: float   # from batch submission to the successful response
    attempts: int


class DeadLetter(msgspec.Struct, frozen=True):
    reason: str
    stage: str                     # "parse" or "score"
    payload: bytes | None
    source: SourcePosition
    txn_id: str | None = None
    attempts: int = 0
    last_status: int | None = None


class SkippedOffsets(DeadLetter, frozen=True):
    """Offsets without a record (the reader's `OffsetGap`) on their way to the writer.

    Not a letter: nothing is written for it. It subclasses DeadLetter only to take the
    path dead letters already take - every scoring step passes them through unchanged -
    and `outputs.to_record` hands the gap back to the writer, which acknowledges it.
    """

    @classmethod
    def of(cls, gap: OffsetGap) -> SkippedOffsets:
        return cls(reason="offsets without a record", stage="read", payload=None, source=gap.source)

    @property
    def gap(self) -> OffsetGap:
        return OffsetGap(self.source)


_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]


class _PlainEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The fast path's schema: exactly the event's fields, with the checks msgspec makes in C."""
    txn_id: _Id
    account_id: _Id
    card_id: _Id
    merchant: _Id
    amount: Annotated[float, msgspec.Meta(gt=0, le=MAX_AMOUNT)]
    currency: str
    event_time: _Id


_decode_plain = msgspec.json.Decoder(_PlainEvent).decode
# In a document without backslashes every '"' opens or closes a string: 2 per name, 2 per
# string value. A plain event has exactly that many; a repeated or extra name adds 2.
_PLAIN_QUOTES = 2 * len(REQUIRED_FIELDS) + 2 * len(_STRING_FIELDS)


def parse_event(value: bytes | None) -> PaymentEvent:
    """The event in `value`, or InvalidEvent with a one-line reason (it raises nothing else).

    The common case - an object of exactly the schema's fields, each named once,
    with no escapes - is decoded and range-checked by msgspec in one call and
    accepted after the checks C cannot make (`_plain_event`). Everything else,
    and every input the fast path does not accept, takes the general path,
    which decides and says precisely what is wrong: the fast path only ever
    accepts what the general one accepts, as the same event (tests/unit/test_parse_fuzz.py).
    """
    if value is None or len(value) == 0:
        raise InvalidEvent("empty message")
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidEvent(f"message too large ({len(value)} bytes > {MAX_MESSAGE_BYTES})")
    event = _plain_event(value)
    return event if event is not None else _parse_document(value)


def _plain_event(value: bytes) -> PaymentEvent | None:
    """The event if `value` is a plain, valid one (about a third of the general path's cost), else None."""
    if b"\\" in value or value.count(b'"') != _PLAIN_QUOTES:
        return None
    try:
        e = _decode_plain(value)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if not (e.txn_id.strip() and e.account_id.strip() and e.card_id.strip() and e.merchant.strip()
            and e.event_time.strip() and _CURRENCY.fullmatch(e.currency) and _iso_8601(e.event_time)):
        return None
    return PaymentEvent(e.txn_id, e.account_id, e.card_id, e.merchant, e.amount, e.currency, e.event_time)


def _iso_8601(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _parse_document(value: bytes) -> PaymentEvent:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("message is not UTF-8") from None
    doc = _json_document(text)
    if not isinstance(doc, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(doc).__name__}")
    missing = [f for f in REQUIRED_FIELDS if doc.get(f) is None]
    if missing:
        raise InvalidEvent(f"missing field(s): {', '.join(missing)}")
    for name in _STRING_FIELDS:
        field = doc[name]
        if not isinstance(field, str):
            raise InvalidEvent(f"field '{name}' must be a string, got {type(field).__name__}")
        if not encodable(field):
            raise InvalidEvent(f"field '{name}' is not valid Unicode (lone surrogate)")
    amount = doc["amount"]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise InvalidEvent(f"field 'amount' must be a number, got {type(amount).__name__}")
    # An integer such as 10**400 has no float (converting it raises OverflowError): it is
    # out of range like an infinity, which the value checks below refuse.
    event = PaymentEvent(txn_id=doc["txn_id"], account_id=doc["account_id"], card_id=doc["card_id"],
                         merchant=doc["merchant"], amount=_as_float(amount), currency=doc["currency"],
                         event_time=doc["event_time"])
    _check_values(event)
    return event


def _as_float(amount: int | float) -> float:
    try:
        return float(amount)
    except OverflowError:
        return math.inf if amount > 0 else -math.inf


def _check_values(event: PaymentEvent) -> None:
    """What the types cannot say: lengths, the amount's range, the currency code, the timestamp."""
    for name in _STRING_FIELDS:
        field = getattr(event, name)
        if not field.strip() or len(field) > MAX_ID_CHARS:
            raise InvalidEvent(f"field '{name}' must be 1-{MAX_ID_CHARS} characters")
    if not 0 < event.amount <= MAX_AMOUNT:   # also NaN and infinities
        raise InvalidEvent(f"field 'amount' out of range (0, {MAX_AMOUNT:.0f}]: {_brief(event.amount)}")
    if not _CURRENCY.fullmatch(event.currency):
        raise InvalidEvent(f"field 'currency' must be 3 upper-case letters: {_brief(event.currency)}")
    if not _iso_8601(event.event_time):
        raise InvalidEvent(f"field 'event_time' is not ISO-8601: {_brief(event.event_time)}")


def _json_document(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_object)
    except RecursionError:
        raise InvalidEvent("invalid JSON: too deeply nested") from None
    except InvalidEvent:
        raise
    except json.JSONDecodeError as e:
        raise InvalidEvent(f"invalid JSON: {e.msg}") from None
    except ValueError:
        # The only other ValueError json.loads raises: Python's int-string limit (4,300 digits).
        raise InvalidEvent("invalid JSON: integer literal too long") from None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object in which no field we read is named twice: with `{"amount": 5, "amount": 5000}`
    parsers disagree on the amount (Python keeps the last, others the first), so no one can
    tell which one was scored. Other names may repeat: they are neither read nor sent on."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        repeated = [n for n, count in Counter(n for n, _ in pairs).items() if count > 1 and n in REQUIRED_FIELDS]
        if repeated:
            raise InvalidEvent(f"invalid JSON: duplicate name {_brief(repeated[0])}")
    return doc


def encodable(text: str) -> bool:
    """False for a str with a lone surrogate: json.loads makes one of "\\ud800", and no
    Kafka key or UTF-8 output can hold it."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _brief(value: object) -> str:
    """`repr(value)` cut to fit a reason line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_EVENTS_IN = metrics.counter("events_in")
_EVENTS_VALID = metrics.counter("events_valid")
_PARSE_DEAD_LETTERS = metrics.counter("parse_dead_letters")


class _ParseFn(beam.DoFn):
    # Counted here and handed to the metrics every _FLUSH_EVERY records and at the end of the
    # bundle: two metric updates per event were a tenth of the parse step's cost.
    _FLUSH_EVERY = 1000

    def start_bundle(self) -> None:
        self._seen = self._valid = self._invalid = 0

    def process(self, record: KafkaRecord | OffsetGap) -> Iterator[ParsedEvent | DeadLetter]:
        if isinstance(record, OffsetGap):
            yield SkippedOffsets.of(record)
            return
        self._seen += 1
        if self._seen >= self._FLUSH_EVERY:
            self._flush()
        try:
            event = parse_event(record.value)
        except InvalidEvent as e:
            reason = str(e)
        except Exception as e:  # a parser bug costs one dead letter, not a bundle that fails on every retry
            reason = f"parser error: {type(e).__name__}: {_brief(str(e))}"
            _LOG.error("parse_event raised %s on %s/%d@%d; dead-lettered", type(e).__name__,
                       record.position.topic, record.position.partition, record.position.offset, exc_info=True)
        else:
            self._valid += 1
            yield ParsedEvent(event, record.value or b"", record.position, record.timestamp_ms)
            return
        self._invalid += 1
        yield DeadLetter(reason=reason, stage="parse", payload=record.value, source=record.position)

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        _EVENTS_IN.inc(self._seen)
        _EVENTS_VALID.inc(self._valid)
        _PARSE_DEAD_LETTERS.inc(self._invalid)
        self._seen = self._valid = self._invalid = 0


class ParseEvents(beam.PTransform):
    """KafkaRecord -> ParsedEvent | DeadLetter (an OffsetGap -> SkippedOffsets)."""

    def expand(self, records):
        return records | "Parse" >> beam.ParDo(_ParseFn())
