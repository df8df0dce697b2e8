"""How results and dead letters are written: Kafka records keyed by txn_id, JSON values.

msgspec encodes them (a tenth of `json.dumps`' cost per record, which was a
tenth of the whole drain's CPU). Skipped offsets write nothing: they go back to
the writer as the reader's `OffsetGap`.
"""
from __future__ import annotations

import base64
import time
from typing import Any

import msgspec

from transforms.events import DeadLetter, PaymentEvent, ScoredEvent, SkippedOffsets
from transforms.kafka.records import OffsetGap, OutboundRecord

# Dead letters keep at most this much of the original payload, so a hostile
# 1 MB message cannot make its own dead letter too large for the broker.
MAX_DEAD_LETTER_PAYLOAD = 64 * 1024

_encode = msgspec.json.Encoder().encode


class _Result(PaymentEvent, frozen=True):
    """A result's JSON document: the event's fields, then the verdict's, in this order on the wire."""
    score: float
    decision: str
    model_version: str
    enrichment_latency_ms: float
    attempts: int
    scored_at_ms: int


def result_record(scored: ScoredEvent, topic: str) -> OutboundRecord:
    e = scored.parsed.event
    doc = _Result(e.txn_id, e.account_id, e.card_id, e.merchant, e.amount, e.currency, e.event_time,
                  scored.score, scored.decision, scored.model_version, round(scored.enrichment_latency_ms, 3),
                  scored.attempts, int(time.time() * 1000))
    return OutboundRecord(topic, e.txn_id.encode(), _encode(doc), scored.parsed.source)


def dead_letter_record(letter: DeadLetter, topic: str) -> OutboundRecord:
    doc: dict[str, Any] = dict(reason=letter.reason, stage=letter.stage, txn_id=letter.txn_id,
                               attempts=letter.attempts, last_status=letter.last_status,
                               source=dict(topic=letter.source.topic, partition=letter.source.partition,
                                           offset=letter.source.offset),
                               dead_lettered_at_ms=int(time.time() * 1000))
    payload = letter.payload or b""
    doc.update(payload_bytes=len(payload), payload_truncated=len(payload) > MAX_DEAD_LETTER_PAYLOAD)
    payload = payload[:MAX_DEAD_LETTER_PAYLOAD]
    try:
        doc.update(payload=payload.decode("utf-8"), payload_encoding="utf-8")
    except UnicodeDecodeError:
        doc.update(payload=base64.b64encode(payload).decode(), payload_encoding="base64")
    key = letter.txn_id.encode() if letter.txn_id else None
    return OutboundRecord(topic, key, _encode(doc), letter.source)


def to_record(outcome: ScoredEvent | DeadLetter, output_topic: str, dlq_topic: str) -> OutboundRecord | OffsetGap:
    if isinstance(outcome, SkippedOffsets):
        return outcome.gap
    if isinstance(outcome, DeadLetter):
        return dead_letter_record(outcome, dlq_topic)
    return result_record(outcome, output_topic)
