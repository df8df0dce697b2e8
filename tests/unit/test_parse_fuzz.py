"""Fuzz campaign over the parser and the parse step (strategies: json_text.py).

Every message - any bytes, any JSON document, any event-shaped object - is an
event that the rest of the path can encode and write, or InvalidEvent with a
short one-line reason whose dead letter can be written; the parse DoFn turns
every record into exactly one output and never fails the bundle.
"""
from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.json_text import FUZZ_EXAMPLES, GOOD, encoded, events, message_values, one_field
from transforms.events import (
    MAX_AMOUNT,
    MAX_ID_CHARS,
    DeadLetter,
    InvalidEvent,
    ParsedEvent,
    ParseEvents,
    PaymentEvent,
    ScoredEvent,
    _parse_document,
    _plain_event,
    parse_event,
)
from transforms.kafka.records import KafkaRecord, OutboundRecord, SourcePosition
from transforms.outputs import to_record
from transforms.scoring.codec import encode_request

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
POSITION = SourcePosition("in", 0, 7, 7)


def written(outcome: ParsedEvent | DeadLetter) -> OutboundRecord:
    """What the writer would get for this parse outcome (a parsed event as if scored)."""
    if isinstance(outcome, ParsedEvent):
        encode_request([outcome])
        outcome = ScoredEvent(outcome, 0.5, "approve", "m1", 1.0, 1)
    record = to_record(outcome, "out", "dlq")
    assert isinstance(record, OutboundRecord) and isinstance(record.value, bytes)
    return record


def check(value: bytes) -> PaymentEvent | None:
    try:
        event = parse_event(value)
    except InvalidEvent as e:
        reason = str(e)
        assert reason and "\n" not in reason and len(reason) <= 160, reason
        written(DeadLetter(reason, "parse", value, POSITION))
        return None
    for name in ("txn_id", "account_id", "card_id", "merchant", "currency", "event_time"):
        text = getattr(event, name)
        assert text.strip() and len(text) <= MAX_ID_CHARS
        text.encode("utf-8")
    assert 0 < event.amount <= MAX_AMOUNT
    assert len(event.currency) == 3 and event.currency.isupper()
    written(ParsedEvent(event, value, POSITION, 0))
    return event


@FUZZ
@given(message_values)
def test_any_message_is_an_event_or_a_one_line_reason(value: bytes) -> None:
    check(value)


@FUZZ
@given(events())
def test_event_shaped_objects_are_validated_field_by_field(document: tuple[str, bool]) -> None:
    text, valid = document
    event = check(encoded(text))
    if valid:
        assert event == PaymentEvent(**GOOD)


@FUZZ
@given(one_field)
def test_each_field_may_be_any_value(text: str) -> None:
    check(encoded(text))


_LOCK = threading.Lock()
_OUTPUTS: dict[str, list[tuple[int, str, str]]] = defaultdict(list)


class _Collect(beam.DoFn):
    def __init__(self, run: str) -> None:
        self._run = run

    def process(self, outcome: ParsedEvent | DeadLetter):
        record = written(outcome)   # inside the pipeline, as the job's ToRecords step would
        reason = outcome.reason if isinstance(outcome, DeadLetter) else ""
        with _LOCK:
            _OUTPUTS[self._run].append((outcome.source.offset, type(outcome).__name__, reason or record.topic))


@settings(max_examples=max(5, FUZZ_EXAMPLES // 100), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=64)), message_values), min_size=1, max_size=120))
def test_the_parse_step_turns_every_record_into_one_output(items: list[tuple[bytes | None, bytes]]) -> None:
    records = [KafkaRecord(SourcePosition("in", 0, i, i), key, value, 1_700_000_000_000)
               for i, (key, value) in enumerate(items)]
    run = uuid.uuid4().hex
    with beam.Pipeline(options=PipelineOptions(
            ["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"])) as p:
        p | beam.Create(records, reshuffle=False) | ParseEvents() | beam.ParDo(_Collect(run))
    outputs = sorted(_OUTPUTS.pop(run))
    assert [offset for offset, _, _ in outputs] == list(range(len(records)))
    assert all(kind == "ParsedEvent" or (kind == "DeadLetter" and reason) for _, kind, reason in outputs)


def accepted_alike(value: bytes) -> None:
    """The fast path accepts only what the general path accepts, and as the same event."""
    fast = _plain_event(value)
    if fast is not None:
        assert _parse_document(value) == fast


@FUZZ
@given(st.one_of(events().map(lambda d: encoded(d[0])), one_field.map(encoded), message_values))
def test_the_fast_path_accepts_only_what_the_general_path_accepts(value: bytes) -> None:
    accepted_alike(value)


def test_the_fast_path_takes_plain_events_and_leaves_the_rest_to_the_general_path() -> None:
    plain = encoded(json.dumps(GOOD))
    assert _plain_event(plain) == PaymentEvent(**GOOD)
    for text in (json.dumps({**GOOD, "note": "x"}),                       # an extra name
                 json.dumps(GOOD)[:-1] + ', "amount": 5000}',               # a repeated one
                 json.dumps({**GOOD, "merchant": "caf\u00e9 \"x\""}),        # an escape
                 json.dumps({**GOOD, "amount": 0}), json.dumps({**GOOD, "currency": "eur"}),
                 json.dumps({**GOOD, "event_time": "yesterday"}), json.dumps({**GOOD, "card_id": "  "})):
        assert _plain_event(encoded(text)) is None
        accepted_alike(encoded(text))
