"""The parser/validator: every bad message becomes a one-line reason, never an exception leak."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.events import MAX_MESSAGE_BYTES, InvalidEvent, PaymentEvent, parse_event

GOOD = dict(txn_id="t-1", account_id="acct-1", card_id="card-1", merchant="m-1", amount=12.5,
            currency="EUR", event_time="2026-11-26T19:00:00.123Z")


def encode(**overrides) -> bytes:
    doc = dict(GOOD, **overrides)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def test_a_valid_event_parses() -> None:
    assert parse_event(encode()) == PaymentEvent(**GOOD)


@pytest.mark.parametrize("value, reason", [
    (None, "empty message"),
    (b"", "empty message"),
    (b"{not json", "invalid JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (encode(amount=...), "missing field(s): amount"),
    (encode(txn_id=None), "missing field(s): txn_id"),
    (encode(amount="12.5"), "field 'amount' must be a number, got str"),
    (encode(amount=True), "field 'amount' must be a number, got bool"),
    (encode(txn_id=17), "field 'txn_id' must be a string, got int"),
    (encode(amount=-3), "field 'amount' out of range"),
    (encode(amount=1e12), "field 'amount' out of range"),
    (encode(currency="euro"), "field 'currency' must be 3 upper-case letters"),
    (encode(event_time="yesterday"), "field 'event_time' is not ISO-8601"),
    (encode(merchant=""), "field 'merchant' must be 1-128 characters"),
    (encode(account_id="x" * 129), "field 'account_id' must be 1-128 characters"),
    (b"x" * (MAX_MESSAGE_BYTES + 1), "message too large"),
    # Poison numbers: no float for 10**400 (OverflowError), and past Python's int-string limit
    # json.loads itself raises a plain ValueError.
    (encode(amount=...)[:-1] + b', "amount": 1' + b"0" * 400 + b"}", "field 'amount' out of range"),
    (encode(amount=...)[:-1] + b', "amount": 1' + b"0" * 5000 + b"}", "invalid JSON: integer literal too long"),
    (encode(amount=float("inf")), "field 'amount' out of range"),
    # A lone surrogate parses as a str but can never be encoded (the Kafka key, the output).
    (encode(txn_id="\ud800"), "field 'txn_id' is not valid Unicode"),
    (encode(currency="EUR\n"), "field 'currency' must be 3 upper-case letters"),
    (encode(amount=...)[:-1] + b', "amount": 5, "amount": 5000}', "invalid JSON: duplicate name 'amount'"),
    (b"[" * 100_000 + b"]" * 100_000, "message too large"),
])
def test_bad_messages_are_rejected_with_a_reason(value, reason) -> None:
    with pytest.raises(InvalidEvent) as e:
        parse_event(value)
    assert reason in str(e.value)
    assert "\n" not in str(e.value)


def test_deeply_nested_json_is_a_reason_not_a_crash() -> None:
    with pytest.raises(InvalidEvent):
        parse_event(b"[" * 30_000 + b"]" * 30_000)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_either_parse_or_give_a_one_line_reason(value: bytes) -> None:
    try:
        event = parse_event(value)
    except InvalidEvent as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(event, PaymentEvent)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10)


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({}, optional={k: json_values for k in GOOD}))
def test_any_json_object_is_validated_field_by_field(doc) -> None:
    try:
        raw = json.dumps(doc).encode()
    except ValueError:
        return
    try:
        event = parse_event(raw)
    except InvalidEvent as e:
        assert "\n" not in str(e)
    else:
        assert event.amount > 0 and len(event.currency) == 3
