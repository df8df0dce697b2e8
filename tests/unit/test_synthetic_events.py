"""The synthetic event generator: reproducible, well-typed, and malformed in known ways."""
from __future__ import annotations

import json
import random
import re
import statistics
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from testbed.kafka import synthetic_events

T0 = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=timezone.utc)
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _events(seed: int, n: int = 500) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [synthetic_events.make_event(seq, rng, run_id="u", event_time=T0) for seq in range(n)]


def test_same_seed_same_events_and_other_seed_differs() -> None:
    assert _events(42) == _events(42)
    assert _events(42) != _events(43)


def test_fields_and_types() -> None:
    batch = _events(1, 2_000)
    assert len({e["txn_id"] for e in batch}) == len(batch)
    for seq, event in enumerate(batch):
        assert tuple(event) == synthetic_events.REQUIRED_FIELDS
        assert event["txn_id"] == f"txn-u-{seq:09d}"
        assert re.fullmatch(r"acct-\d{6}", event["account_id"])
        assert int(event["account_id"][5:]) < synthetic_events.DEFAULT_ACCOUNTS
        assert event["card_id"].startswith(f"card-{event['account_id'][5:]}-")
        assert isinstance(event["merchant"], str) and event["merchant"]
        assert isinstance(event["amount"], float)
        assert synthetic_events.MIN_AMOUNT <= event["amount"] <= synthetic_events.MAX_AMOUNT
        assert round(event["amount"], 2) == event["amount"]
        assert event["currency"] in synthetic_events.CURRENCIES
        assert event["event_time"] == "2026-01-02T03:04:05.678Z"
    assert 15 < statistics.median(e["amount"] for e in batch) < 80  # log-normal, not uniform
    assert {e["currency"] for e in batch} == set(synthetic_events.CURRENCIES)


def test_event_time_is_utc_with_milliseconds_and_z() -> None:
    cet = timezone(timedelta(hours=1))
    assert synthetic_events.format_event_time(datetime(2026, 5, 1, 1, 0, 0, 5_000, tzinfo=cet)) == "2026-05-01T00:00:00.005Z"
    assert ISO_MS_Z.fullmatch(synthetic_events.make_event(0, random.Random(0))["event_time"])


def test_encode_round_trips_and_classifies_valid() -> None:
    event = _events(3, 1)[0]
    assert json.loads(synthetic_events.encode(event)) == event
    assert synthetic_events.classify(synthetic_events.encode(event)) == "valid"


def test_malformed_kinds_cycle_and_keep_their_txn_id() -> None:
    rng = random.Random(5)
    kinds = [synthetic_events.classify(synthetic_events.make_malformed(seq, rng, run_id="u", event_time=T0)) for seq in range(12)]
    assert kinds == list(synthetic_events.MALFORMED_KINDS) * 3
    for seq in range(40):
        kind = synthetic_events.malformed_kind(seq)
        payload = synthetic_events.make_malformed(seq, rng, run_id="u", kind=kind)
        assert synthetic_events.classify(payload) == kind
        assert synthetic_events.recover_txn_id(payload, "u") == synthetic_events.txn_id("u", seq)


def test_malformed_is_deterministic_with_a_seed() -> None:
    def batch(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        return [synthetic_events.make_malformed(seq, rng, event_time=T0) for seq in range(20)]

    assert batch(9) == batch(9)


def test_unknown_malformed_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown malformed kind"):
        synthetic_events.corrupt(_events(0, 1)[0], "nonsense", random.Random(0))


def test_key_is_the_account_and_null_for_unparseable_payloads() -> None:
    event = _events(0, 1)[0]
    assert synthetic_events.message_key(event, None) == event["account_id"].encode()
    assert synthetic_events.message_key(event, "amount_as_string") == event["account_id"].encode()
    assert synthetic_events.message_key(event, "invalid_json") is None
