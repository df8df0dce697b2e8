"""The contract's event schema: every bad message becomes a one-line reason naming the field and the
problem, never an exception leak. The payment contract (payments.yaml) reproduces the old
PaymentEvent rules; a second schema, built from a dict, has other names and types."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.contract.fields import FieldSpec
from transforms.contract.loader import DEFAULT_CONTRACT, ContractError, load_contract, parse_contract
from transforms.contract.schema import MAX_NESTING, Event, EventSchema, InvalidEvent

PAYMENTS = load_contract(DEFAULT_CONTRACT).schema
MAX_BYTES = 65536

GOOD = dict(txn_id="t-1", account_id="acct-1", card_id="card-1", merchant="m-1", amount=12.5,
            currency="EUR", event_time="2026-11-26T19:00:00.123Z")
GOOD_VALUES = tuple(GOOD.values())


def encode(**overrides: Any) -> bytes:
    doc = dict(GOOD, **overrides)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def reason_of(schema: EventSchema, raw: bytes | None) -> str:
    with pytest.raises(InvalidEvent) as e:
        schema.parse(raw)
    reason = str(e.value)
    assert reason and "\n" not in reason and len(reason) <= 160, reason
    return reason


def test_the_payment_schema_is_the_old_payment_event() -> None:
    assert PAYMENTS.names == tuple(GOOD)
    assert (PAYMENTS.id_field, PAYMENTS.shard_key, PAYMENTS.max_bytes) == ("txn_id", "account_id", MAX_BYTES)


def test_a_valid_event_parses() -> None:
    assert PAYMENTS.parse(encode()) == Event(GOOD_VALUES, "t-1", "acct-1")
    # the same event through the general path (an escape keeps it off the fast one)
    assert PAYMENTS.parse(encode(merchant="caf\u00e9")) == Event(GOOD_VALUES[:3] + ("caf\u00e9",) + GOOD_VALUES[4:],
                                                                 "t-1", "acct-1")


def test_an_integer_amount_is_a_number() -> None:
    event = PAYMENTS.parse(encode(amount=12))
    assert event.values[4] == 12.0 and isinstance(event.values[4], float)


def test_unknown_fields_are_accepted_and_not_part_of_the_values() -> None:
    for raw in (encode(note="x", nested={"a": [1, None]}, n=1e300),
                encode(note="caf\u00e9 \"quoted\""),                        # an escape: the general path
                json.dumps({"extra": {"txn_id": 5}, **GOOD}).encode()):    # a schema name, nested in an extra
        assert PAYMENTS.parse(raw) == Event(GOOD_VALUES, "t-1", "acct-1"), raw


@pytest.mark.parametrize("value, reason", [
    (None, "empty message"),
    (b"", "empty message"),
    (b"{not json", "invalid JSON: Expecting property name enclosed in double quotes"),
    (b"\xff\xfe\x00", "message is not UTF-8"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (encode(amount=...), "missing field(s): amount"),
    (encode(txn_id=None), "missing field(s): txn_id"),
    (json.dumps({"txn_id": "t"}).encode(), "missing field(s): account_id, card_id, merchant, amount, currency, event_time"),
    (encode(amount="12.5"), "field 'amount' must be a number, got string"),
    (encode(amount=True), "field 'amount' must be a number, got boolean"),
    (encode(txn_id=17), "field 'txn_id' must be a string, got number"),
    (encode(txn_id=[1]), "field 'txn_id' must be a string, got array"),
    (encode(amount=-3), "field 'amount' out of range (0, 1e+06]: -3.0"),
    (encode(amount=0), "field 'amount' out of range (0, 1e+06]: 0.0"),
    (encode(amount=1e12), "field 'amount' out of range (0, 1e+06]: 1000000000000.0"),
    (encode(amount=1_000_000.0000001), "field 'amount' out of range (0, 1e+06]"),
    (encode(currency="euro"), "field 'currency' does not match [A-Z]{3}: 'euro'"),
    (encode(event_time="yesterday"), "field 'event_time' is not ISO-8601: 'yesterday'"),
    (encode(merchant=""), "field 'merchant' must be 1-128 characters"),
    (encode(card_id="   "), "field 'card_id' must not be blank"),
    (encode(account_id="x" * 129), "field 'account_id' must be 1-128 characters"),
    (b"x" * (MAX_BYTES + 1), f"message too large ({MAX_BYTES + 1} bytes > {MAX_BYTES})"),
    # Poison numbers: no float for 10**400 (OverflowError), and past Python's int-string limit
    # json.loads itself raises a plain ValueError.
    (encode(amount=...)[:-1] + b', "amount": 1' + b"0" * 400 + b"}", "field 'amount' out of range: inf"),
    (encode(amount=...)[:-1] + b', "amount": 1' + b"0" * 5000 + b"}", "field 'amount' is an integer literal too long to read"),
    (encode(amount=float("inf")), "invalid JSON: Infinity is not a JSON number"),
    (encode(amount=...)[:-1] + b', "amount": 1e999}', "field 'amount' out of range: inf"),
    # A lone surrogate parses as a str but can never be encoded (the Kafka key, the output).
    (encode(txn_id="\ud800"), "field 'txn_id' is not valid Unicode (lone surrogate)"),
    (encode(currency="EUR\n"), "field 'currency' does not match [A-Z]{3}: 'EUR\\n'"),
    (encode(amount=...)[:-1] + b', "amount": 5, "amount": 5000}', "invalid JSON: duplicate name 'amount'"),
    (b"[" * 100_000 + b"]" * 100_000, "message too large (200000 bytes > 65536)"),
    (b"[" * 30_000 + b"]" * 30_000, "invalid JSON: too deeply nested"),
])
def test_bad_messages_are_rejected_with_a_reason(value, reason) -> None:
    assert reason in reason_of(PAYMENTS, value)


@pytest.mark.parametrize("name, value", [
    ("txn_id", 17), ("account_id", ""), ("card_id", " "), ("merchant", "x" * 129), ("amount", "1"),
    ("currency", "eur"), ("event_time", "yesterday"),
])
def test_each_reason_names_the_field(name: str, value: Any) -> None:
    assert reason_of(PAYMENTS, encode(**{name: value})).startswith(f"field '{name}' ")


@pytest.mark.parametrize("raw", [
    encode()[:-1] + b', "note": "\xff"}',               # not UTF-8, in a field the schema does not name
    encode(merchant=...)[:-1] + b', "merchant": "m-\xff"}',   # ... and in one it does
    b'{"txn_id": "\xff"}',
], ids=["in-an-unknown-field", "in-a-schema-field", "in-the-only-field"])
def test_a_message_that_is_not_utf8_is_a_reason_wherever_the_bad_byte_is(raw: bytes) -> None:
    assert reason_of(PAYMENTS, raw) == "message is not UTF-8"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_either_parse_or_give_a_one_line_reason(value: bytes) -> None:
    try:
        event = PAYMENTS.parse(value)
    except InvalidEvent as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(event, Event) and len(event.values) == len(GOOD)


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
        event = PAYMENTS.parse(raw)
    except InvalidEvent as e:
        assert "\n" not in str(e)
    else:
        assert event.values == tuple(PAYMENTS.field(n).check(doc[n]) for n in GOOD)
        assert 0 < event.values[4] <= 1_000_000 and len(event.values[5]) == 3


# ---- a second schema, from a dict: other names and types ------------------------------------

STOCK = parse_contract({
    "event": {
        "id": "sku",
        "shard_key": "warehouse",
        "max_bytes": 512,
        "fields": {
            "sku": {"type": "integer", "minimum": 1},
            "warehouse": {"type": "string", "enum": ["north", "south"]},
            "quantity": {"type": "integer", "minimum": 0, "maximum": 10_000},
            "unit": {"type": "string", "required": False, "default": "piece", "enum": ["piece", "box"]},
            "fragile": {"type": "boolean", "required": False, "default": False},
            "dimensions": {"type": "array", "required": False},
            "size": {"type": "integer", "required": False, "default": 1, "enum": [1, 2, 3]},
        },
    },
    "service": {"url": "http://stock.example/check"},
    "response": {"fields": {"available": {"type": "boolean"}}},
}, "stock.yaml").schema

ITEM = {"sku": 1234, "warehouse": "north", "quantity": 5}


def stock(**overrides: Any) -> bytes:
    doc = dict(ITEM, **overrides)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def test_a_second_schema_has_its_own_fields_and_an_integer_id() -> None:
    assert STOCK.names == ("sku", "warehouse", "quantity", "unit", "fragile", "dimensions", "size")
    event = STOCK.parse(stock())
    assert event == Event((1234, "north", 5, "piece", False, None, 1), "1234", "north")
    assert isinstance(event.values[0], int)


def test_optional_fields_take_their_default_when_absent_or_null() -> None:
    assert STOCK.parse(stock(unit=None, fragile=None, size=None)).values[3:] == ("piece", False, None, 1)
    given_ = STOCK.parse(stock(unit="box", fragile=True, dimensions=[1, 2], size=3))
    assert given_.values[3:] == ("box", True, [1, 2], 3)
    escaped = STOCK.parse(stock(note="\u00e9", unit="box"))   # an escape: the general path, same defaults
    assert escaped.values == (1234, "north", 5, "box", False, None, 1)


def test_an_integral_number_is_an_integer_and_a_fraction_is_not() -> None:
    assert STOCK.parse(stock(quantity=7.0)).values[2] == 7
    assert isinstance(STOCK.parse(stock(quantity=7.0)).values[2], int)
    assert STOCK.parse(stock(sku=12.0)).id == "12"
    assert STOCK.parse(stock(sku=10**30)).id == str(10**30)   # no int64 bound: as JSON has none


def test_unknown_fields_of_the_second_schema_are_accepted_and_not_values() -> None:
    assert STOCK.parse(stock(colour="red", sku_note={"sku": 1})).values == (1234, "north", 5, "piece", False, None, 1)


@pytest.mark.parametrize("raw, reason", [
    (stock(sku=...), "missing field(s): sku"),
    (stock(sku=None, quantity=None), "missing field(s): sku, quantity"),
    (stock(sku="1234"), "field 'sku' must be an integer, got string"),
    (stock(sku=True), "field 'sku' must be an integer, got boolean"),
    (stock(sku=1.5), "field 'sku' must be an integer, got 1.5"),
    (stock(sku=0), "field 'sku' out of range [1, inf): 0"),
    (stock(quantity=10_001), "field 'quantity' out of range [0, 10000]: 10001"),
    (stock(quantity=...)[:-1] + b', "quantity": 1e999}', "field 'quantity' must be an integer, got inf"),
    (stock(quantity=float("inf")), "invalid JSON: Infinity is not a JSON number"),
    (stock(warehouse="east"), "field 'warehouse' must be one of 'north', 'south': 'east'"),
    (stock(warehouse=1), "field 'warehouse' must be a string, got number"),
    (stock(unit="crate"), "field 'unit' must be one of 'piece', 'box': 'crate'"),
    (stock(size=4), "field 'size' must be one of 1, 2, 3: 4"),
    (stock(size=2.5), "field 'size' must be an integer, got 2.5"),
    (stock(fragile="yes"), "field 'fragile' must be a boolean, got string"),
    (stock(fragile=0), "field 'fragile' must be a boolean, got number"),
    (stock(dimensions={"w": 1}), "field 'dimensions' must be an array, got object"),
    (stock(sku=...)[:-1] + b', "sku": 1, "sku": 2}', "invalid JSON: duplicate name 'sku'"),
    (stock(note="x" * 600), "message too large"),
    (b'"north"', "expected a JSON object, got str"),
])
def test_the_second_schema_gives_one_line_reasons(raw: bytes, reason: str) -> None:
    assert reason in reason_of(STOCK, raw)


@pytest.mark.parametrize("dimensions", [["\ud800"], [{"\udfff": 1}]], ids=["value", "name"])
def test_a_lone_surrogate_inside_an_array_field_is_a_reason(dimensions: list) -> None:
    """The schema sends every field (request.fields: all): a lone surrogate nested in one could
    never be encoded, so the event is refused, as one in a string field is."""
    reason = reason_of(STOCK, stock(dimensions=dimensions))
    assert "'dimensions'" in reason and "surrogate" in reason


@pytest.mark.parametrize("escaped", [False, True], ids=["fast path", "general path"])
def test_a_value_nested_deeper_than_the_limit_is_a_reason(escaped: bool) -> None:
    """Beam pickles events (pickle gives up at about 460 levels): the parser refuses what the job could not carry."""
    deepest: list = [{"a": []}]                       # 3 levels ...
    for _ in range(MAX_NESTING - 3):
        deepest = [deepest]                           # ... to the limit
    note = "\u00e9" if escaped else "e"
    at_limit = STOCK.parse(stock(dimensions=deepest, note=note))
    assert at_limit.values[5] == deepest
    too_deep = reason_of(STOCK, stock(dimensions=[deepest], note=note))
    assert too_deep == f"field 'dimensions' is nested deeper than {MAX_NESTING} levels"
    assert STOCK.parse(stock(note="[" * 200)).values[5] is None   # brackets in a string nest nothing


def test_a_repeated_name_the_schema_does_not_know_is_the_message_s_business() -> None:
    assert STOCK.parse(stock()[:-1] + b', "note": 1, "note": 2}').values[0] == 1234


def test_an_event_from_a_mapping_is_checked_like_a_message() -> None:
    assert STOCK.event({"sku": 9, "warehouse": "south", "quantity": 0}).id == "9"
    with pytest.raises(InvalidEvent, match="field 'warehouse' must be one of"):
        STOCK.event({"sku": 9, "warehouse": "west", "quantity": 0})


# ---- schemas that cannot work are refused when they are made ---------------------------------

def test_a_field_named_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="event field 'a' is named twice"):
        EventSchema((FieldSpec("a", "string"), FieldSpec("b", "integer"), FieldSpec("a", "integer")), "a", "a")


def test_a_contract_file_that_names_an_event_field_twice_is_refused(tmp_path: Path) -> None:
    """YAML (like JSON) lets a later key silently replace an earlier one: the first `amount`'s
    rules would be dropped without a word."""
    text = DEFAULT_CONTRACT.read_text(encoding="utf-8")
    rule = "    amount:     {type: number, exclusive_minimum: 0, maximum: 1000000, example: 1.0}\n"
    assert rule in text
    path = tmp_path / "twice.yaml"
    path.write_text(text.replace(rule, rule + "    amount:     {type: any}\n"), encoding="utf-8")
    with pytest.raises(ContractError, match="amount"):
        load_contract(path)


@pytest.mark.parametrize("event, message", [
    ({"id": "a", "fields": {"a": {"type": "str"}}}, "event.fields.a: type must be one of string, number"),
    ({"id": "b", "fields": {"a": {"type": "string"}}}, "event.id names 'b', which is not in event.fields"),
    ({"id": "a", "fields": {"a": {"type": "number"}}}, "event.id field 'a' must be a required string or integer"),
    ({"id": "a", "fields": {"a": {"type": "string", "required": False}}}, "must be a required string or integer"),
    ({"id": "a", "fields": {"a": {"type": "integer", "max_length": 3}}}, "event.fields.a: length, pattern"),
    ({"id": "a", "fields": {"a": {"type": "string", "pattern": "["}}}, "event.fields.a: pattern is not a regular"),
    ({"id": "a", "fields": {"a": {"type": "string", "minimun": 1}}}, "event.fields.a.minimun: unknown key"),
    ({"id": "a", "fields": {}}, "event.fields: must map each field's name to its rules"),
])
def test_a_schema_that_cannot_work_is_one_contract_error(event: dict, message: str) -> None:
    doc = {"event": event, "service": {"url": "http://x.example/"}, "response": {"fields": {"r": {"type": "any"}}}}
    with pytest.raises(ContractError) as e:
        parse_contract(doc, "bad.yaml")
    assert str(e.value).startswith("bad.yaml: ") and message in str(e.value) and "\n" not in str(e.value)
