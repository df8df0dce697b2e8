"""Where a consumer group without committed offsets starts reading.

A group that has committed offsets always resumes from them; the start
position only decides the first run of a new group (and of a partition the
group has never committed). Kafka's own consumers take this from
`auto.offset.reset`, so when no position is given that property is honoured
(`earliest`, `latest`, or `error`: refuse to guess).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Kind = Literal["earliest", "latest", "timestamp", "error"]

# librdkafka's spellings of auto.offset.reset.
_RESET_ALIASES: dict[str, Kind] = {
    "earliest": "earliest", "smallest": "earliest", "beginning": "earliest",
    "latest": "latest", "largest": "latest", "end": "latest", "error": "error"}


@dataclass(frozen=True)
class StartPosition:
    """`earliest`, `latest`, the first offset at or after `timestamp_ms`, or `error`."""
    kind: Kind = "earliest"
    timestamp_ms: int | None = None

    @classmethod
    def parse(cls, text: str) -> StartPosition:
        """`earliest`, `latest`, epoch milliseconds, or an ISO-8601 time with its zone."""
        value = text.strip()
        if value in ("earliest", "latest"):
            return cls(value)   # type: ignore[arg-type]
        if value.isdigit():
            return cls("timestamp", int(value))
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise ValueError(f"start position {text!r}: expected earliest, latest, epoch milliseconds "
                             "or an ISO-8601 time with a zone (2026-12-07T00:00:00Z)")
        return cls("timestamp", round(moment.timestamp() * 1000))

    @classmethod
    def from_reset(cls, properties: dict[str, str] | None) -> StartPosition:
        """The position `auto.offset.reset` in librdkafka properties asks for (default earliest)."""
        reset = (properties or {}).get("auto.offset.reset", "earliest").strip().lower()
        if reset not in _RESET_ALIASES:
            raise ValueError(f"auto.offset.reset={reset!r}: expected one of {sorted(_RESET_ALIASES)}")
        return cls(_RESET_ALIASES[reset])

    def __str__(self) -> str:
        return str(self.timestamp_ms) if self.kind == "timestamp" else self.kind
