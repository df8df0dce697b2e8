"""Fuzz campaign over a contract's data path (strategies: json_text.py), for the payment contract
and for a second one with other names, types and shapes:

- any message - any bytes, any JSON document, any event-shaped object - is an Event that the
  rest of the path can encode, or InvalidEvent with a short one-line reason whose dead letter
  can be written; the parse DoFn turns every record into exactly one output and never fails
  the bundle;
- any response body is results (or per-element failures) or InvalidResponse with a one-line
  reason, never another exception (it would travel through the runtime's future into the bundle);
- both fast paths (msgspec) only ever accept what the general paths accept, as the same values;
- the enriched record is valid JSON holding every field of the event, unknown ones included,
  and the result's fields, whose values win over an event field of the same name.
"""
from __future__ import annotations

import decimal
import json
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.json_text import (
    FUZZ_EXAMPLES,
    GOOD,
    deep,
    encoded,
    events,
    message_values_of,
    names,
    numbers,
    one_field_of,
    strings,
    values,
)
from transforms.contract.codec import InvalidResponse
from transforms.contract.fields import FieldSpec, encodable
from transforms.contract.loader import DEFAULT_CONTRACT, Contract, load_contract, parse_contract
from transforms.contract.schema import Event, InvalidEvent
from transforms.control.signals import ElementFailure
from transforms.enrichment.outcomes import Enriched
from transforms.events import DeadLetter, EventListCoder, ParsedEvent, ParseEvents, SkippedOffsets
from transforms.kafka.records import KafkaRecord, OffsetGap, OutboundRecord, SourcePosition
from transforms.outputs import RecordEncoder, dead_letter_record

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
POSITION = SourcePosition("in", 0, 7, 7)

PAYMENTS = load_contract(DEFAULT_CONTRACT)

#: The second contract: an integer id, optional fields with defaults, enums (of strings, of
#: integers), a wrapped request with a static member, results at a nested path matched by id.
ORDERS = parse_contract({
    "event": {
        "id": "order_no",
        "shard_key": "store",
        "fields": {
            "order_no": {"type": "integer", "minimum": 1},
            "store": {"type": "string", "min_length": 1, "max_length": 16, "pattern": "[a-z0-9-]+"},
            "channel": {"type": "string", "enum": ["web", "app", "shop"]},
            "priority": {"type": "integer", "required": False, "default": 3, "minimum": 1, "maximum": 5},
            "tier": {"type": "integer", "required": False, "default": 1, "enum": [1, 2, 3]},
            "total": {"type": "number", "minimum": 0},
            "gift": {"type": "boolean", "required": False, "default": False},
            "placed_at": {"type": "string", "format": "date-time"},
            "meta": {"type": "object", "required": False},
        },
    },
    "service": {"url": "http://127.0.0.1:9/match"},
    "request": {"fields": {"order_no": "id", "store": "store", "total": "amount", "meta": "meta"}, "wrap": "items",
                "static": {"model": "v2"}},
    "response": {
        "results": "data.matches",
        "match": "id",
        "id": "id",
        "fields": {
            "risk": {"type": "number", "minimum": 0, "maximum": 1},
            "label": {"type": "string", "enum": ["low", "high"], "as": "risk_label"},
            "rank": {"type": "integer", "required": False, "default": 0},
            "reasons": {"type": "array", "required": False},
        },
    },
    "result": {"latency_ms": "took_ms", "attempts": None, "enriched_at_ms": "enriched_at"},
}, "orders.yaml")

ORDER = dict(order_no=42, store="s-1", channel="web", priority=2, tier=3, total=19.5, gift=True,
             placed_at="2026-11-26T19:00:00Z", meta={"k": [1, "v"]})


@dataclass(frozen=True)
class Case:
    """A contract and what its fuzzing needs: a good event, event ids, a good result per event."""
    contract: Contract
    good: dict[str, Any]
    ids: st.SearchStrategy[list[Any]]                   # a batch's ids, as the id field holds them
    item: Callable[[Any], dict[str, st.SearchStrategy[str]]]   # a good result for an id: name -> JSON text
    tops: tuple[str, ...]                               # the good body first, then wrong shapes
    variants: st.SearchStrategy[dict[str, Any]]          # good events with other values (escapes too)

    def event(self, id_value: Any) -> Event:
        return self.contract.schema.event(dict(self.good, **{self.contract.schema.id_field: id_value}))


json_objects = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

CASES = {
    "payments": Case(
        PAYMENTS, GOOD,
        st.lists(st.text(min_size=1, max_size=8).filter(str.strip), min_size=1, max_size=4, unique=True),
        lambda i: {"txn_id": st.just(json.dumps(i)), "score": st.sampled_from(["0.25", "1", "-3e2"]),
                   "decision": st.sampled_from(['"approve"', '"review"']),
                   "model_version": st.sampled_from(['"m1"', '""', "null"])},
        ('{"results":[%s]}', "[%s]", '{"results":[%s],"results":7}', '{"results":{"0":[%s]}}', '{"result":[%s]}'),
        st.builds(lambda m, a: dict(GOOD, merchant=m, amount=a), st.text(min_size=1, max_size=20).filter(str.strip),
                  st.floats(min_value=0.01, max_value=1_000_000)),
    ),
    "orders": Case(
        ORDERS, ORDER,
        st.lists(st.integers(1, 10**12), min_size=1, max_size=4, unique=True),
        lambda i: {"id": st.sampled_from([json.dumps(i), json.dumps(str(i))]), "risk": st.sampled_from(["0.25", "0", "1"]),
                   "label": st.sampled_from(['"low"', '"high"']), "rank": st.sampled_from(["2", "null", "-7"]),
                   "reasons": st.sampled_from(['["r1"]', "[]", "null"])},
        ('{"data":{"matches":[%s]}}', '{"data":{"matches":[%s]},"data":7}', '{"data":[%s]}', "[%s]",
         '{"matches":[%s]}', '{"data":{"matches":{"0":[%s]}}}'),
        st.builds(lambda meta, total: dict(ORDER, meta=meta, total=total),
                  st.dictionaries(st.text(max_size=6), json_objects, max_size=3),
                  st.floats(min_value=0, max_value=1e12)),
    ),
}
CONTRACTS = pytest.mark.parametrize("name", sorted(CASES))


def one_line(reason: str, limit: int) -> None:
    assert reason and "\n" not in reason and "\r" not in reason and len(reason) <= limit, reason


def valid_value(spec: FieldSpec, value: Any) -> None:
    """`value` is one the field holds: its default if optional, else what `check` makes of it."""
    if not spec.required and value == spec.default:
        return
    assert spec.check(value) == value, (spec.name, value)


def strict_json(data: bytes) -> Any:
    """The document in `data` if it is JSON as RFC 8259 has it: UTF-8, no NaN or Infinity tokens
    (integers of any length: past Python's int-string limit, as decimals)."""
    def refuse(token: str) -> Any:
        raise AssertionError(f"not JSON: {token}")
    return json.loads(data.decode("utf-8"), parse_constant=refuse, parse_int=any_int)


def any_int(literal: str) -> int | decimal.Decimal:
    try:
        return int(literal)
    except ValueError:
        return decimal.Decimal(literal)


def same(a: Any, b: Any) -> bool:
    """Equality of decoded JSON (or tuples of values) with the same types - 1 is not 1.0, 0.0 is
    not -0.0 - iterative: documents may be as deep as json.loads manages."""
    todo = [(a, b)]
    while todo:
        x, y = todo.pop()
        if isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            todo.extend((x[k], y[k]) for k in x)
        elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y) or type(x) is not type(y):
                return False
            todo.extend(zip(x, y))
        elif isinstance(x, float) and isinstance(y, float):
            if repr(x) != repr(y):
                return False
        elif not (x == y and type(x) is type(y)):
            return False
    return True


def without_infinities(value: Any) -> Any:
    """`value` as msgspec re-encodes it: a float beyond range is null (no deep values here: the
    events re-encoded are the drawn ones, a few levels deep)."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: without_infinities(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_infinities(v) for v in value]
    return value


# ---- (a) any message is an event or a one-line reason ----------------------------------------

def check_message(contract: Contract, value: bytes) -> Event | None:
    schema = contract.schema
    try:
        event = schema.parse(value)
    except InvalidEvent as e:
        reason = str(e)
        one_line(reason, 160)
        record = dead_letter_record(DeadLetter("invalid_event", reason, "parse", value, POSITION), "dlq")
        assert isinstance(record, OutboundRecord) and strict_json(record.value)["detail"] == reason
        return None
    assert isinstance(event, Event) and len(event.values) == len(schema.fields)
    for spec, v in zip(schema.fields, event.values):
        valid_value(spec, v)
    assert event.id == str(event.values[schema.index(schema.id_field)]) and encodable(event.id)
    assert event.key == str(event.values[schema.index(schema.shard_key)]) and encodable(event.key)
    sent = strict_json(contract.codec().encode_request([event]))
    for name in contract.request.wrap:
        sent = sent[name]
    assert sent == [{wire: event.values[schema.index(field)] for field, wire in contract.request.fields}]
    return event


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_any_message_is_an_event_or_a_one_line_reason(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    check_message(case.contract, data.draw(message_values_of(case.good)))


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_event_shaped_objects_are_validated_field_by_field(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    text, valid = data.draw(events(case.good))
    event = check_message(case.contract, encoded(text))
    if valid:
        assert event == case.contract.schema.event(case.good)


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_each_field_may_be_any_value(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    check_message(case.contract, encoded(data.draw(one_field_of(case.good))))


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_what_parsing_makes_crosses_to_the_enrichment_step_as_it_was(name: str, data: st.DataObject) -> None:
    """`EventListCoder` (the job's keyed boundary) gives back every event, dead letter and gap, of the same types."""
    schema, messages = CASES[name].contract.schema, data.draw(st.lists(message_values_of(CASES[name].good), max_size=6))
    elements: list[Any] = [SkippedOffsets.of(OffsetGap(POSITION))] if data.draw(st.booleans()) else []
    for i, value in enumerate(messages):
        try:
            elements.append(ParsedEvent(schema.parse(value), value, POSITION, i, value[:3] or None))
        except InvalidEvent as e:
            elements.append(DeadLetter("invalid_event", str(e), "parse", value, POSITION))
    coder = EventListCoder()
    back = coder.decode(coder.encode(elements))
    assert [type(e) for e in back] == [type(e) for e in elements]
    for was, now in zip(elements, back):
        if isinstance(was, ParsedEvent):
            assert same(was.event.values, now.event.values)
            assert (was.event.id, was.event.key, was.raw, was.source, was.timestamp_ms, was.record_key) == (
                now.event.id, now.event.key, now.raw, now.source, now.timestamp_ms, now.record_key)
        else:
            assert was == now


# ---- (b) the parser's fast path accepts only what the general path accepts -------------------

def parsed_alike(contract: Contract, value: bytes) -> tuple[Any, ...] | None:
    """The fast path accepts only what the general path accepts, as the same values."""
    parser = contract.schema._p
    fast = parser._plain(value)
    if fast is not None:
        try:
            general = parser._general(value)
        except InvalidEvent as e:
            raise AssertionError(f"the fast path accepted what the general path refuses: {e}") from None
        assert same(fast, general)
    return fast


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_the_fast_path_accepts_only_what_the_general_path_accepts(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    value = data.draw(st.one_of(events(case.good).map(lambda d: encoded(d[0])), one_field_of(case.good).map(encoded),
                                message_values_of(case.good)))
    parsed_alike(case.contract, value)


@pytest.mark.parametrize("name, doc", [
    ("payments", GOOD),
    ("payments", {**GOOD, "note": "x", "n": [1, {"k": 2.5}]}),       # unknown fields: still plain
    ("payments", {**GOOD, "amount": 12}),                            # 12 -> 12.0 on both paths
    ("orders", ORDER),
    ("orders", {**ORDER, "meta": None}),                                  # null -> the default None
    ("orders", {k: v for k, v in ORDER.items() if k in ("order_no", "store", "channel", "total", "placed_at")}),
    ("orders", {**ORDER, "order_no": 10**30}),
])
def test_the_fast_path_takes_plain_events(name: str, doc: dict[str, Any]) -> None:
    contract = CASES[name].contract
    assert parsed_alike(contract, json.dumps(doc).encode()) == contract.schema.event(doc).values


@pytest.mark.parametrize("name, text", [
    ("payments", json.dumps(GOOD)[:-1] + ', "amount": 5000}'),                # a repeated name
    ("payments", json.dumps({**GOOD, "merchant": "caf\u00e9 \"x\""})),        # an escape
    ("payments", json.dumps({**GOOD, "amount": 0})),
    ("payments", json.dumps({**GOOD, "currency": "eur"})),
    ("payments", json.dumps({**GOOD, "event_time": "yesterday"})),
    ("payments", json.dumps({**GOOD, "card_id": "  "})),
    ("payments", json.dumps({**GOOD, "note": "txn_id"})),                    # a value equal to a name
    ("payments", json.dumps({**GOOD, "n": {"txn_id": 2}})),                  # a name, nested in an extra
    ("orders", json.dumps({**ORDER, "order_no": 7.0})),                      # integral float: general path's int
    ("orders", json.dumps({**ORDER, "tier": 4})),                            # an integer enum: a post-check
    ("orders", json.dumps({**ORDER, "placed_at": "later"})),
    ("orders", json.dumps({**ORDER, "meta": {"x": float("nan")}})),
    ("orders", json.dumps({**ORDER, "priority": None, "tier": None})),      # null -> a default: general path
])
def test_the_fast_path_leaves_the_rest_to_the_general_path(name: str, text: str) -> None:
    assert parsed_alike(CASES[name].contract, encoded(text)) is None


@pytest.mark.parametrize("name, value", [
    ("payments", json.dumps(GOOD).encode()[:-1] + b', "note": "\xff"}'),              # not UTF-8 where unparsed
    ("payments", json.dumps(GOOD).encode().replace(b'"m-1"', b'"m-\xff"')),            # not UTF-8 in a field
    ("orders", json.dumps(ORDER).encode()[:-1] + b', "note": "\xed\xa0\x80"}'),       # a raw lone surrogate
    ("orders", json.dumps(ORDER).encode().replace(b'"web"', b'"w\xffb"')),
], ids=["payments-utf8-unknown", "payments-utf8-field", "orders-surrogate-unknown", "orders-utf8-field"])
def test_the_fast_path_refuses_bytes_the_general_path_refuses(name: str, value: bytes) -> None:
    parsed_alike(CASES[name].contract, value)
    with pytest.raises(InvalidEvent):
        CASES[name].contract.schema.parse(value)


def test_an_integer_past_the_int_string_limit_is_carried_where_no_field_reads_it() -> None:
    """msgspec skips it in a member no field reads, and so does the general path: the record keeps
    the literal digit for digit, on either road to the output (the splice, and the re-encoding of an
    event that names an output field)."""
    literal = b"1" + b"0" * 5000
    codec = PAYMENTS.codec()
    for extra in (b', "note": ' + literal, b', "note": ' + literal + b', "score": 1'):
        raw = json.dumps(GOOD).encode()[:-1] + extra + b"}"
        event = PAYMENTS.schema.parse(raw)
        assert parsed_alike(PAYMENTS, raw) == event.values
        record = codec.result_document(raw, event, (0.5, "approve", "m1"), 1.0, 1)
        assert b'"note":' + literal in record.replace(b" ", b"")
    with pytest.raises(InvalidEvent, match="'amount' is an integer literal too long"):
        PAYMENTS.schema.parse(json.dumps({**GOOD, "amount": 0}).encode().replace(b'"amount": 0', b'"amount": ' + literal))


@pytest.mark.parametrize("meta", [b'{"k": "\\ud800"}', b'{"k": [{"\\udc00": 1}]}'], ids=["value", "nested-name"])
def test_an_event_that_cannot_be_sent_is_refused(meta: bytes) -> None:
    """A lone surrogate in an object field the request carries could never be encoded: the event
    is refused with a reason, as one in a string field is, not a batch that fails to encode."""
    raw = json.dumps({**ORDER, "meta": None}).encode().replace(b"null", meta)
    check_message(ORDERS, raw)


# ---- (c) any response body is results or a one-line reason -----------------------------------

@st.composite
def answers(draw: st.DrawFn, case: Case) -> tuple[bytes, list[Event], bool]:
    """(body, events, intact): a good answer for a batch, then results dropped, added, swapped, or
    fields replaced or left out; `intact` when it is still the good answer."""
    ids = draw(case.ids)
    batch = [case.event(i) for i in ids]
    items = [{k: draw(v) for k, v in case.item(i).items()} for i in ids]
    changed = draw(st.lists(st.sampled_from(items), max_size=3))
    for item in changed:
        field = draw(st.sampled_from(sorted(item)))
        if draw(st.booleans()):
            item[field] = draw(st.one_of(numbers, strings, values, st.sampled_from([json.dumps(i) for i in ids])))
        else:
            del item[field]
    results = [("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in item.items()) + "}") for item in items]
    shuffled = draw(st.one_of(st.just(results), st.permutations(results), st.lists(st.sampled_from(results), max_size=5),
                              st.lists(values, max_size=4)))
    top = draw(st.sampled_from(case.tops))
    extra = draw(st.one_of(st.just(""), st.tuples(names, values).map(lambda p: f",{p[0]}:{p[1]}")))
    text = top % ",".join(shuffled)
    body = encoded(text[:-1] + extra + text[-1] if text.endswith("}") else text)
    intact = not changed and shuffled == results and top == case.tops[0] and not extra
    return body, batch, intact


bodies = st.one_of(st.binary(max_size=2_048), values.map(encoded), deep.map(encoded))


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    except (RecursionError, ValueError):
        return True     # JSON, but too deep or with too long an integer for Python
    return True


def check_response(contract: Contract, body: bytes, batch: Sequence[Event]) -> list[Any] | None:
    try:
        results = contract.codec().decode_response(body, batch)
    except InvalidResponse as e:
        one_line(str(e), 200)
        assert e.retryable is (not is_json(body)), (e.retryable, str(e))
        return None
    assert len(results) == len(batch)
    for result, event in zip(results, batch):
        if isinstance(result, ElementFailure):
            assert result.reason in ("missing_result", "invalid_result")
            one_line(result.detail, 200)
            continue
        assert isinstance(result, tuple) and len(result) == len(contract.response.fields)
        for spec, v in zip(contract.response.fields, result):
            valid_value(spec, v)
        # a result the job can write: the enriched record is JSON with the result in it
        record = strict_json(contract.codec().result_document(raw_of(contract, event), event, result, 1.0, 1))
        assert all(same(record[f.output_name], v) for f, v in zip(contract.response.fields, result))
    return results


def raw_of(contract: Contract, event: Event) -> bytes:
    """A message that is `event` (its fields only)."""
    return json.dumps(dict(zip(contract.schema.names, event.values))).encode()


def expected_results(case: Case, body: bytes) -> list[tuple[Any, ...]]:
    """The results of an intact good answer, read with json.loads."""
    doc = json.loads(body)
    for name in case.contract.response.results_at:
        doc = doc[name]
    fields = case.contract.response.fields
    return [tuple(f.default if item.get(f.name) is None else f.check(item[f.name]) for f in fields) for item in doc]


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_any_answer_shape_is_results_or_a_one_line_reason(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    body, batch, intact = data.draw(answers(case))
    results = check_response(case.contract, body, batch)
    if intact:
        assert results == expected_results(case, body)


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_any_body_is_results_or_a_one_line_reason(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    batch = [case.event(i) for i in data.draw(case.ids)]
    check_response(case.contract, data.draw(bodies), batch)


# ---- (d) the codec's fast path accepts only what its general path accepts --------------------

def decoded_alike(contract: Contract, body: bytes, batch: Sequence[Event]) -> list[Any] | None:
    codec = contract.codec()
    items = codec._plain_items(body)
    fast = codec._matched(items, batch, lambda item: item[0]) if items is not None else None
    if fast is not None:
        try:
            general = codec._general(body, batch)
        except InvalidResponse as e:
            raise AssertionError(f"the fast path accepted what the general path refuses: {e}") from None
        assert same(fast, general)
    return fast


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_the_codec_fast_path_accepts_only_what_the_general_path_accepts(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    ids = data.draw(case.ids)
    body, batch, _ = data.draw(st.one_of(answers(case), st.tuples(bodies, st.just([case.event(i) for i in ids]),
                                                                  st.just(False))))
    decoded_alike(case.contract, body, batch)


ITEM = {"txn_id": "t1", "score": 0.25, "decision": "approve", "model_version": "m1"}
T1 = CASES["payments"].event("t1")
O7, O8 = CASES["orders"].event(7), CASES["orders"].event(8)
MATCH = {"id": 7, "risk": 0.5, "label": "high"}


@pytest.mark.parametrize("name, doc, batch, expected", [
    ("payments", {"results": [ITEM]}, [T1], [(0.25, "approve", "m1")]),
    ("payments", {"results": [dict(ITEM, score=1)]}, [T1], [(1.0, "approve", "m1")]),
    ("payments", {"results": [{k: v for k, v in ITEM.items() if k != "model_version"}]}, [T1],
     [(0.25, "approve", "")]),                                       # absent: the default, filled in by msgspec
    ("orders", {"data": {"matches": [MATCH]}}, [O7], [(0.5, "high", 0, None)]),
    ("orders", {"data": {"matches": [dict(MATCH, id="8", rank=2), dict(MATCH, reasons=["x"])]}}, [O7, O8],
     [(0.5, "high", 0, ["x"]), (0.5, "high", 2, None)]),
    ("orders", {"data": {"matches": [MATCH]}, "other": 1}, [O7, O8],
     [(0.5, "high", 0, None), ElementFailure("missing_result", "the response has no result for id '8'")]),
])
def test_the_codec_fast_path_takes_plain_answers(name: str, doc: Any, batch: list[Event], expected: list[Any]) -> None:
    assert decoded_alike(CASES[name].contract, json.dumps(doc).encode(), batch) == expected


@pytest.mark.parametrize("name, text, batch", [
    ("payments", '{"results":[' + json.dumps(ITEM) + '],"results":7}', [T1]),          # the last name wins
    ("payments", '{"results":[' + json.dumps(ITEM)[:-1] + ',"score":1e999}]}', [T1]),   # so does a score out of range
    ("payments", '{"results":[' + json.dumps(dict(ITEM, txn_id="t\\u0031")) + "]}", [T1]),   # an escape
    ("payments", json.dumps({"results": [dict(ITEM, txn_id="t2")]}), [T1]),
    ("payments", json.dumps({"results": [dict(ITEM, decision="")]}), [T1]),
    ("payments", json.dumps({"results": [ITEM, ITEM]}), [T1]),
    ("orders", json.dumps({"data": {"matches": [dict(MATCH, risk=2)]}}), [O7]),
    ("orders", json.dumps({"data": {"matches": [dict(MATCH, label="mid")]}}), [O7]),
    ("orders", json.dumps({"data": {"matches": [dict(MATCH, id=True)]}}), [O7]),
])
def test_the_codec_fast_path_leaves_the_rest_to_the_general_path(name: str, text: str, batch: list[Event]) -> None:
    assert decoded_alike(CASES[name].contract, text.encode(), batch) is None
    check_response(CASES[name].contract, text.encode(), batch)


@pytest.mark.parametrize("name, body, batch", [
    ("payments", b'{"results":[{"txn_id":"t1","score":1,"decision":"a","x":"\xff"}]}', [T1]),
    ("payments", b'{"results":[{"txn_id":"t1","score":1,"decision":"a"}],"x":1' + b"0" * 5000 + b"}", [T1]),
    ("payments", b'{"results":[{"txn_id":"t1","score":1,"decision":"\xff"}]}', [T1]),
    ("orders", b'{"data":{"matches":[{"id":7,"risk":0.5,"label":"low","reasons":["\xed\xa0\x80"]}]}}', [O7]),
], ids=["payments-utf8-unknown", "payments-long-int-unknown", "payments-utf8-field", "orders-surrogate-in-array"])
def test_the_codec_fast_path_refuses_bodies_the_general_path_refuses(name: str, body: bytes,
                                                                     batch: list[Event]) -> None:
    decoded_alike(CASES[name].contract, body, batch)
    check_response(CASES[name].contract, body, batch)


@pytest.mark.parametrize("reasons", [
    b'["\\ud800"]',                  # a lone surrogate, escaped
    b'[{"why": ["x\\udfff"]}]',       # ... nested
], ids=["escaped", "nested"])
def test_a_result_that_cannot_be_written_costs_its_element(reasons: bytes) -> None:
    """A lone surrogate in a result field of type array (or object, any) cannot be written to the
    enriched record: like one in a string field, it is that element's failure (or the response's
    InvalidResponse), never a result that fails when it is written."""
    body = b'{"data":{"matches":[{"id":7,"risk":0.5,"label":"low","reasons":' + reasons + b'}]}}'
    check_response(ORDERS, body, [O7])


# ---- (e) the enriched record: the event's fields, unknown ones included, and the result's ----

def value_for(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """A value of a result field (the service's answer, as the codec returns it)."""
    if spec.enum is not None:
        strategy: st.SearchStrategy[Any] = st.sampled_from(spec.enum)
    elif spec.type == "string":
        strategy = st.text(min_size=spec.min_length or 0, max_size=spec.max_length or 20)
    elif spec.type == "number":
        strategy = st.floats(spec.minimum, spec.maximum, allow_nan=False, allow_infinity=False)
    elif spec.type == "integer":
        strategy = st.integers(None if spec.minimum is None else int(spec.minimum),
                               None if spec.maximum is None else int(spec.maximum))
    elif spec.type == "array":
        strategy = st.lists(json_objects, max_size=3)
    else:
        strategy = json_objects
    return strategy if spec.required else st.one_of(st.just(spec.default), strategy)


@st.composite
def event_texts(draw: st.DrawFn, case: Case) -> bytes:
    """A valid event with extra fields, some named like an output, written in any JSON style
    (escapes when `ensure_ascii` or a string needs one)."""
    contract = case.contract
    good = draw(case.variants)
    outputs = contract.codec().output_names
    extra_names = st.one_of(st.sampled_from(outputs), st.sampled_from(["note", "Score", "risk label", "data"]),
                            st.text(max_size=10)).filter(lambda n: n not in contract.schema.names)
    extras = draw(st.dictionaries(extra_names, json_objects, max_size=4))
    pairs = draw(st.permutations(list(good.items()) + list(extras.items())))
    text = json.dumps(dict(pairs), ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])),
                      separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])))
    return encoded(text + draw(st.sampled_from(["", "\n", " \r\n"])))


def check_record(case: Case, raw: bytes, result: tuple[Any, ...], latency_ms: float, attempts: int) -> None:
    contract = case.contract
    try:
        event = contract.schema.parse(raw)
    except InvalidEvent:
        return
    codec = contract.codec()
    before = int(time.time() * 1000)
    out = codec.result_document(raw, event, result, latency_ms, attempts)
    after = int(time.time() * 1000)
    doc = strict_json(out)
    assert isinstance(doc, dict)
    source = json.loads(raw, parse_int=any_int)
    outputs = codec.output_names
    assert set(doc) == set(source) | set(outputs)
    # An event naming an output field is re-encoded, where a number beyond float range becomes null;
    # otherwise its bytes are kept as they came.
    reencoded = bool(set(source) & set(outputs))
    for name, value in source.items():
        if name not in outputs:
            expected = without_infinities(value) if reencoded else value
            assert same(doc[name], expected), (name, doc[name], value)
    for spec, value in zip(contract.response.fields, result):
        assert same(doc[spec.output_name], value), (spec.output_name, doc[spec.output_name], value)
    meta = contract.result
    if meta.latency_ms:
        assert doc[meta.latency_ms] == latency_ms
    if meta.attempts:
        assert doc[meta.attempts] == attempts
    if meta.enriched_at_ms:
        assert before <= doc[meta.enriched_at_ms] <= after
    # ... and what the job's writer makes of it
    record = RecordEncoder(contract, "out", "dlq")(Enriched(ParsedEvent(event, raw, POSITION, 0), result, attempts,
                                                            latency_ms))
    assert isinstance(record, OutboundRecord) and record.topic == "out" and record.key == event.id.encode()
    assert {k: v for k, v in strict_json(record.value).items() if k != meta.enriched_at_ms} == \
        {k: v for k, v in doc.items() if k != meta.enriched_at_ms}


def results_of(case: Case) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(*[value_for(f) for f in case.contract.response.fields])


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_the_record_holds_the_event_and_the_result(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    check_record(case, data.draw(event_texts(case)), data.draw(results_of(case)),
                 data.draw(st.floats(0, 1e6)), data.draw(st.integers(1, 100)))


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_any_message_that_parses_can_be_written_as_a_record(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    raw = data.draw(st.one_of(events(case.good).map(lambda e: encoded(e[0])), message_values_of(case.good)))
    check_record(case, raw, data.draw(results_of(case)), 1.5, 2)


RESULTS = {"payments": (0.5, "approve", ""), "orders": (0.5, "low", 0, None)}


@pytest.mark.parametrize("name, extra, valid", [
    ("payments", b'"score": "the event\'s"', True),                  # a collision: the result's value wins
    ("payments", b'"note": "caf\\u00e9"', True),                     # an escape
    ("payments", b'"note": "\\ud800"', False),     # a lone surrogate where the schema does not look: refused too
    ("payments", b'"note": NaN', False),                # JSON has no NaN: refused, or written as JSON
    ("payments", b'"note": 1e999', True),
    ("orders", b'"risk_label": {"x": [1]}, "label": "kept"', True),   # `as`: the event's own `label` stays
    ("orders", b'"took_ms": 1e999', True),
], ids=["collision", "escape", "lone-surrogate", "nan", "1e999", "renamed-output", "collision-1e999"])
def test_the_record_of_an_event_with_awkward_extras(name: str, extra: bytes, valid: bool) -> None:
    case = CASES[name]
    raw = json.dumps(case.good).encode()[:-1] + b", " + extra + b"}"
    if valid:
        case.contract.schema.parse(raw)     # a valid event: the fields the schema names are
    check_record(case, raw, RESULTS[name], 3.0, 1)


# ---- (f) the parse step turns every record into exactly one output ---------------------------

_LOCK = threading.Lock()
_OUTPUTS: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)


class _Collect(beam.DoFn):
    """Records each outcome and writes it as the job would (a parsed event: its request)."""

    def __init__(self, run: str, contract: Contract) -> None:
        self._run, self._contract = run, contract

    def process(self, outcome: ParsedEvent | DeadLetter):
        if isinstance(outcome, SkippedOffsets):
            kind, reason, detail = "SkippedOffsets", outcome.reason, ""
        elif isinstance(outcome, DeadLetter):
            record = dead_letter_record(outcome, "dlq")
            assert isinstance(record, OutboundRecord) and record.value
            kind, reason, detail = "DeadLetter", outcome.reason, outcome.detail
        else:
            assert self._contract.codec().encode_request([outcome.event])
            kind, reason, detail = "ParsedEvent", "", outcome.event.id
        with _LOCK:
            _OUTPUTS[self._run].append((outcome.source.offset, kind, reason, detail))


def _record(offset: int, item: tuple[bytes | None, bytes] | None) -> KafkaRecord | OffsetGap:
    position = SourcePosition("in", 0, offset, offset)
    if item is None:
        return OffsetGap(position)
    return KafkaRecord(position, item[0], item[1], 1_700_000_000_000)


@CONTRACTS
@settings(max_examples=max(5, FUZZ_EXAMPLES // 100), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_parse_step_turns_every_record_into_one_output(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    items = data.draw(st.lists(st.one_of(st.none(), st.tuples(st.one_of(st.none(), st.binary(max_size=64)),
                                                                  message_values_of(case.good))),
                               min_size=1, max_size=120))
    records = [_record(i, item) for i, item in enumerate(items)]
    size = data.draw(st.integers(min_value=1, max_value=len(records)))   # the reader's polls
    batches = [records[i:i + size] for i in range(0, len(records), size)]
    run = uuid.uuid4().hex
    with beam.Pipeline(options=PipelineOptions(
            ["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"])) as p:
        (p | beam.Create(batches, reshuffle=False) | ParseEvents(case.contract.schema)
         | beam.FlatMap(iter) | beam.ParDo(_Collect(run, case.contract)))
    outputs = sorted(_OUTPUTS.pop(run))
    assert [offset for offset, _, _, _ in outputs] == list(range(len(records)))
    for (_, kind, reason, detail), record in zip(outputs, records):
        if isinstance(record, OffsetGap):
            assert kind == "SkippedOffsets"
            continue
        try:
            event = case.contract.schema.parse(record.value)
        except Exception:   # whatever the parser does, the step makes a dead letter of it
            assert (kind, reason) == ("DeadLetter", "invalid_event")
            one_line(detail, 200)
        else:
            assert (kind, detail) == ("ParsedEvent", event.id)
