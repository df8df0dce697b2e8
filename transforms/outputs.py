"""How results and dead letters are written: Kafka records keyed by the event's id, JSON values.

A result is the event's own bytes with the service's fields added (the
contract's `Codec.result_document`), so fields the schema does not name reach
the output untouched. A dead letter carries the reason code, a detail line and
the original payload, so `pipelines.replay_dead_letters` can put it back on the
input topic, under the input record's key, once the cause is fixed. Skipped offsets write nothing: they go
back to the writer as the reader's `OffsetGap`.
"""
from __future__ import annotations

import base64
import time
from typing import Any

import msgspec

from transforms.contract.loader import Contract
from transforms.enrichment.outcomes import Enriched, Failed
from transforms.events import DeadLetter, ParsedEvent, SkippedOffsets
from transforms.kafka.records import OffsetGap, OutboundRecord

# Dead letters keep at most this much of the original payload, so a hostile
# 1 MB message cannot make its own dead letter too large for the broker.
MAX_DEAD_LETTER_PAYLOAD = 64 * 1024

_encode = msgspec.json.Encoder().encode


def dead_letter_record(letter: DeadLetter, topic: str) -> OutboundRecord:
    doc: dict[str, Any] = dict(reason=letter.reason, detail=letter.detail, stage=letter.stage, id=letter.id,
                               attempts=letter.attempts, last_status=letter.last_status,
                               source=dict(topic=letter.source.topic, partition=letter.source.partition,
                                           offset=letter.source.offset),
                               dead_lettered_at_ms=int(time.time() * 1000))
    payload = letter.payload or b""
    doc.update(payload_bytes=len(payload), payload_truncated=len(payload) > MAX_DEAD_LETTER_PAYLOAD)
    doc["payload"], doc["payload_encoding"] = _as_text(payload[:MAX_DEAD_LETTER_PAYLOAD])
    doc["record_key"], doc["record_key_encoding"] = (_as_text(letter.record_key[:MAX_DEAD_LETTER_PAYLOAD])
                                                     if letter.record_key is not None else (None, None))
    key = letter.id.encode() if letter.id else None
    return OutboundRecord(topic, key, _encode(doc), letter.source)


def _as_text(data: bytes) -> tuple[str, str]:
    """Bytes in a JSON document: as text when they are UTF-8, else base64; (text, encoding)."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def enrichment_dead_letter(failed: Failed[ParsedEvent]) -> DeadLetter:
    parsed = failed.element
    return DeadLetter(reason=failed.reason, detail=failed.detail, stage="enrich", payload=parsed.raw,
                      source=parsed.source, id=parsed.event.id, attempts=failed.attempts,
                      last_status=failed.last_status, record_key=parsed.record_key)


class RecordEncoder:
    """Enrichment's outcomes -> the records the writer produces (a gap goes back as an OffsetGap).
    Picklable: the contract's codec is built in each worker process on first use."""

    def __init__(self, contract: Contract, output_topic: str, dlq_topic: str) -> None:
        self._contract, self._output_topic, self._dlq_topic = contract, output_topic, dlq_topic
        self._record: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_record": None}

    def __call__(self, outcome: Enriched[ParsedEvent, Any] | Failed[ParsedEvent] | DeadLetter,
                 ) -> OutboundRecord | OffsetGap:
        if isinstance(outcome, Enriched):
            if self._record is None:
                self._record = self._contract.codec().result_document
            parsed = outcome.element
            value = self._record(parsed.raw, parsed.event, outcome.result, outcome.latency_ms, outcome.attempts)
            return OutboundRecord(self._output_topic, parsed.event.id.encode(), value, parsed.source)
        if isinstance(outcome, SkippedOffsets):
            return outcome.gap
        if isinstance(outcome, Failed):
            outcome = enrichment_dead_letter(outcome)
        return dead_letter_record(outcome, self._dlq_topic)

    def each(self, outcomes: list[Any] | Any) -> list[OutboundRecord | OffsetGap]:
        """A list of outcomes (or one outcome) -> their records, for steps that take one record per element."""
        return [self(o) for o in outcomes] if outcomes.__class__ is list else [self(outcomes)]
