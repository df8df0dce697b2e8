"""The scoring service's wire format and what each outcome becomes, in one place.

Request: `POST /score` with a JSON list of events (the schema's fields) and an
`Idempotency-Key` derived from the batch's txn_ids. Response (200):
`{"results": [{"txn_id", "score", "decision", "model_version"?}, ...]}`, one
item per request item, in request order. Every client - the pipeline's and
each baseline of the benchmark - encodes, validates and emits through these
functions, so a comparison between them is a comparison of their throttling
alone.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Annotated

import msgspec

from transforms.events import DeadLetter, ParsedEvent, ScoredEvent, encodable

#: Buckets of the `requests` metric; `outcome_bucket` maps every attempt to one.
REQUEST_OUTCOMES = ("ok", "429", "5xx", "timeout", "connection_error", "other")

MAX_DECISION_CHARS = 64


class Verdict(msgspec.Struct, frozen=True):
    """What the service said about one event."""
    score: float
    decision: str
    model_version: str


class InvalidResponse(ValueError):
    """A 200 whose body is not the documented shape; `str(e)` is the one-line reason.

    `retryable` when the bytes are not JSON at all - a body cut short or garbled on the way
    (a proxy, a connection reset mid-write) - which another attempt may well get whole.
    A complete JSON document of the wrong shape is the service's answer to this batch:
    sending it again would most likely get the same answer, so it is dead-lettered at once.
    """

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable


_encode = msgspec.json.Encoder().encode


def encode_request(batch: Sequence[ParsedEvent]) -> bytes:
    return _encode([p.event for p in batch])   # a Struct encodes as the object of its fields


def idempotency_key(txn_ids: Sequence[str]) -> str:
    """Stable per batch content, so a runner's bundle retry re-sends the same key."""
    return hashlib.sha256("\n".join(txn_ids).encode()).hexdigest()[:32]


class _PlainResult(msgspec.Struct, frozen=True):
    txn_id: str
    score: float
    decision: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DECISION_CHARS)]
    model_version: Annotated[str, msgspec.Meta(max_length=MAX_DECISION_CHARS)] = ""


class _PlainResponse(msgspec.Struct, frozen=True):
    results: list[_PlainResult]


_decode_plain = msgspec.json.Decoder(_PlainResponse).decode


def decode_response(body: bytes, txn_ids: Sequence[str]) -> list[Verdict]:
    """The verdicts of a 200 response, in request order; InvalidResponse if the body is not that.

    A plain answer (no escapes, every field of the documented type) is decoded by
    msgspec and accepted after the checks C cannot make (`_plain_verdicts`, a tenth of
    the general path's cost); everything else, and everything the fast path does not
    accept, takes the general path, which decides and gives the reason. The fast path
    accepts only what the general one accepts (tests/unit/test_scoring_codec_fuzz.py).
    """
    verdicts = _plain_verdicts(body, txn_ids)
    return verdicts if verdicts is not None else _general_verdicts(body, txn_ids)


def _plain_verdicts(body: bytes, txn_ids: Sequence[str]) -> list[Verdict] | None:
    if b"\\" in body:
        return None
    try:
        results = _decode_plain(body).results
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if len(results) != len(txn_ids) or [r.txn_id for r in results] != list(txn_ids):
        return None
    if not all(map(math.isfinite, [r.score for r in results])):
        return None
    return [Verdict(r.score, r.decision, r.model_version) for r in results]


def _general_verdicts(body: bytes, txn_ids: Sequence[str]) -> list[Verdict]:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidResponse("response body is not JSON (cut short or garbled)", retryable=True) from None
    except RecursionError:
        raise InvalidResponse("response body is nested too deeply") from None
    except ValueError:   # the only other one json.loads raises: Python's int-string limit
        raise InvalidResponse("response body has an integer literal too long to parse") from None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        raise InvalidResponse("response has no 'results' list")
    if len(results) != len(txn_ids):
        raise InvalidResponse(f"response has {len(results)} results for {len(txn_ids)} events")
    return [_verdict(item, txn_id, i) for i, (item, txn_id) in enumerate(zip(results, txn_ids))]


def _verdict(item: object, txn_id: str, index: int) -> Verdict:
    if not isinstance(item, dict):
        raise InvalidResponse(f"result {index} is not an object")
    if item.get("txn_id") != txn_id:
        raise InvalidResponse(f"result {index} is for txn_id {_brief(item.get('txn_id'))}, not {txn_id!r}")
    score = item.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise InvalidResponse(f"result {index} has no numeric 'score'")
    try:
        score = float(score)
    except OverflowError:
        raise InvalidResponse(f"result {index} has a 'score' out of range") from None
    if not math.isfinite(score):
        raise InvalidResponse(f"result {index} has a non-finite 'score'")
    decision = item.get("decision")
    if not isinstance(decision, str) or not decision or len(decision) > MAX_DECISION_CHARS or not encodable(decision):
        raise InvalidResponse(f"result {index} has no 'decision' string of 1-{MAX_DECISION_CHARS} characters")
    model_version = item.get("model_version", "")
    if not isinstance(model_version, str) or not encodable(model_version):
        raise InvalidResponse(f"result {index} has a non-string 'model_version'")
    return Verdict(score, decision, model_version[:MAX_DECISION_CHARS])


def _brief(value: object) -> str:
    """A txn_id as the service sent it, for a reason line: never the str() of a whole structure."""
    return repr(value[:80]) if isinstance(value, str) else f"of type {type(value).__name__}"



def outcome_bucket(reason: str) -> str:
    """`reason` of an attempt ("ok", "http_429", "timeout", ...) -> one of REQUEST_OUTCOMES."""
    if reason in ("ok", "timeout", "connection_error"):
        return reason
    if reason == "http_429":
        return "429"
    if reason.startswith("http_5"):
        return "5xx"
    return "other"


def scored_events(batch: Sequence[ParsedEvent], verdicts: Sequence[Verdict], latency_ms: float,
                  attempts: int) -> list[ScoredEvent]:
    return [ScoredEvent(p, v.score, v.decision, v.model_version, latency_ms, attempts)
            for p, v in zip(batch, verdicts)]


def dead_letters(batch: Sequence[ParsedEvent], reason: str, attempts: int,
                 status: int | None) -> list[DeadLetter]:
    return [DeadLetter(reason=reason, stage="score", payload=p.raw, source=p.source, txn_id=p.event.txn_id,
                       attempts=attempts, last_status=status) for p in batch]
