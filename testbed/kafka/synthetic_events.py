"""Synthetic payment events (and deliberately malformed ones) for the input topic.

Everything random comes from the caller's `random.Random`, so a seed reproduces the
same stream; only `event_time` defaults to the wall clock. Every malformed payload
still carries its txn_id somewhere (the string, or the bare sequence number for
`txn_id_as_number`) so a test can tell which input a dead letter came from.
"""
from __future__ import annotations

import json
import random
import re
from datetime import datetime, timezone
from typing import Any

REQUIRED_FIELDS = ("txn_id", "account_id", "card_id", "merchant", "amount", "currency", "event_time")
MALFORMED_KINDS = ("invalid_json", "missing_field", "amount_as_string", "txn_id_as_number")
DEFAULT_ACCOUNTS = 10_000
MIN_AMOUNT, MAX_AMOUNT = 0.50, 5_000.00
MERCHANTS = 5_000
CARDS_PER_ACCOUNT = 3
# Weighted by repetition: rng.choice on a tuple is several times cheaper than rng.choices.
_CURRENCIES = ("EUR",) * 45 + ("USD",) * 30 + ("GBP",) * 12 + ("CHF",) * 8 + ("JPY",) * 5
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "JPY")


def txn_id(run_id: str, seq: int) -> str:
    return f"txn-{run_id}-{seq:09d}"


def format_event_time(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a trailing Z, e.g. 2026-11-26T19:25:00.123Z."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(
    seq: int, rng: random.Random, *, run_id: str = "r0", accounts: int = DEFAULT_ACCOUNTS,
    event_time: datetime | None = None,
) -> dict[str, Any]:
    """A valid payment event; amounts are log-normal (median ~37) clamped to 0.50-5,000.00."""
    account = rng.randrange(accounts)
    merchant = min(int(rng.expovariate(1 / 400)), MERCHANTS - 1)  # a few big merchants, long tail
    amount = min(max(rng.lognormvariate(3.6, 1.2), MIN_AMOUNT), MAX_AMOUNT)
    return {
        "txn_id": txn_id(run_id, seq),
        "account_id": f"acct-{account:06d}",
        "card_id": f"card-{account:06d}-{rng.randrange(CARDS_PER_ACCOUNT)}",
        "merchant": f"merch-{merchant:05d}",
        "amount": round(amount, 2),
        "currency": rng.choice(_CURRENCIES),
        "event_time": format_event_time(event_time or datetime.now(timezone.utc)),
    }


def encode(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the wire format of the input topic."""
    return json.dumps(event, separators=(",", ":")).encode()


def corrupt(event: dict[str, Any], kind: str, rng: random.Random) -> bytes:
    """Turn a valid event into a malformed payload of the given kind."""
    broken = dict(event)
    if kind == "invalid_json":
        text = encode(event)
        keep_id = text.index(b",") + 1  # cut somewhere after the txn_id field: never valid JSON
        return text[: rng.randrange(keep_id, len(text) - 1)]
    if kind == "missing_field":
        del broken[rng.choice(REQUIRED_FIELDS[1:])]
    elif kind == "amount_as_string":
        broken["amount"] = f"{event['amount']:.2f}"
    elif kind == "txn_id_as_number":
        broken["txn_id"] = int(event["txn_id"].rsplit("-", 1)[1])
    else:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    return encode(broken)


def malformed_kind(index: int) -> str:
    """Kinds cycle in a fixed order, so any run of len(MALFORMED_KINDS) covers them all."""
    return MALFORMED_KINDS[index % len(MALFORMED_KINDS)]


def make_malformed(
    seq: int, rng: random.Random, *, kind: str | None = None, run_id: str = "r0",
    accounts: int = DEFAULT_ACCOUNTS, event_time: datetime | None = None,
) -> bytes:
    """A malformed payload for `seq`; the kind cycles with `seq` unless given."""
    event = make_event(seq, rng, run_id=run_id, accounts=accounts, event_time=event_time)
    return corrupt(event, kind or malformed_kind(seq), rng)


def classify(payload: bytes) -> str:
    """'valid' or the malformed kind of a payload, judged as a validator downstream would."""
    try:
        doc = json.loads(payload)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return "invalid_json"
    if not isinstance(doc, dict) or any(name not in doc for name in REQUIRED_FIELDS):
        return "missing_field"
    if isinstance(doc["amount"], str):
        return "amount_as_string"
    if isinstance(doc["txn_id"], int):
        return "txn_id_as_number"
    return "valid"


_TXN_ID_TEXT = re.compile(rb'"txn_id":"([^"]+)"')
_TXN_ID_NUMBER = re.compile(rb'"txn_id":(\d+)')


def recover_txn_id(payload: bytes, run_id: str) -> str | None:
    """The txn_id a generated payload (valid or malformed) was made for; None if absent."""
    if match := _TXN_ID_TEXT.search(payload):
        return match.group(1).decode()
    if match := _TXN_ID_NUMBER.search(payload):
        return txn_id(run_id, int(match.group(1)))
    return None


def message_key(event: dict[str, Any], kind: str | None) -> bytes | None:
    """Kafka key: the account id; unparseable payloads get a null key, like a broken client."""
    return None if kind == "invalid_json" else event["account_id"].encode()
