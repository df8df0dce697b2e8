"""Element types that travel between the transforms of the data path.

Every record read from Kafka carries its `SourcePosition` to the sink, so the
sink can acknowledge exactly which offsets are safe to commit. `covers_from`
is the reader's position before this record: the half-open range
`[covers_from, offset + 1)` therefore also covers offset gaps (compaction,
transaction markers) and the committed prefix can advance over them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourcePosition:
    topic: str
    partition: int
    offset: int
    covers_from: int

    @property
    def covered(self) -> tuple[int, int]:
        """Half-open offset range this record accounts for."""
        return (self.covers_from, self.offset + 1)


@dataclass(frozen=True)
class KafkaRecord:
    """One message as read from Kafka."""
    position: SourcePosition
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True)
class OutboundRecord:
    """A message to produce (result or dead letter), with the input it came from."""
    topic: str
    key: bytes | None
    value: bytes
    source: SourcePosition


@dataclass(frozen=True)
class OffsetAck:
    """Offsets of one partition whose outputs the producer has acknowledged.

    `ranges` are half-open `[start, end)` and sorted; they need not be contiguous.
    """
    topic: str
    partition: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class PartitionSpec:
    """One partition to read: offsets `[start, stop)` (stop = 2**63-1 when unbounded)."""
    topic: str
    partition: int
    start: int
    stop: int


@dataclass(frozen=True)
class CommittedOffset:
    """A consumer-group offset `CommitOffsets` has scheduled for commit."""
    topic: str
    partition: int
    offset: int
