"""Element types that travel between the transforms of the data path.

Every record read from Kafka carries its `SourcePosition` to the sink, so the
sink can acknowledge exactly which offsets are safe to commit. `covers_from`
is the reader's position before this record: the half-open range
`[covers_from, offset + 1)` therefore also covers offset gaps (compaction,
transaction markers, aborted records) and the committed prefix can advance
over them. A gap with no record after it in the same read - at the end of a
partition or of a bounded range, just below a split point - travels as an
`OffsetGap` instead.

They are msgspec Structs, not dataclasses: several are made per event, and a
frozen dataclass's `__init__` cost seven times a Struct's (0.9 vs 0.13 us).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import msgspec
from apache_beam import coders


class SourcePosition(msgspec.Struct, frozen=True, gc=False):
    topic: str
    partition: int
    offset: int
    covers_from: int

    @property
    def covered(self) -> tuple[int, int]:
        """Half-open offset range this record accounts for."""
        return (self.covers_from, self.offset + 1)


class KafkaRecord(msgspec.Struct, frozen=True):
    """One message as read from Kafka."""
    position: SourcePosition
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class OffsetGap(msgspec.Struct, frozen=True):
    """Offsets `source.covered` that hold nothing to process and that no record covers.

    The reader emits one where a read ends behind offsets without a record (a
    transaction's commit marker is usually the last offset of a partition);
    `WriteToKafka` acknowledges it without writing anything. `source.offset` is
    the gap's last offset.
    """
    source: SourcePosition


class RecordBatch(list):  # type: ignore[type-arg]
    """What the reader emits per poll of one partition: its records in offset order, then the gaps
    it found (`ReadFromKafka`). The job's steps pass lists like it on, so Beam's cost per element
    is paid per poll rather than per record.

    The type hint for which Beam's coder registry gives `RecordBatchCoder`; the batches themselves
    are plain lists of `KafkaRecord | OffsetGap`.
    """


_Batch = tuple[list[KafkaRecord], list[OffsetGap], list[int]]   # records, gaps, the gaps' places
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Batch)


class RecordBatchCoder(coders.Coder):
    """A batch as MessagePack: its fields (bytes, integers, a topic name) come back as they were.
    Beam's default for a list pickles each record, and Beam encodes every batch the reader emits
    to sample its size (it restarts sampling for each partition it reads)."""

    def encode(self, value: list[KafkaRecord | OffsetGap]) -> bytes:
        records = [r for r in value if r.__class__ is KafkaRecord]
        if len(records) == len(value):
            return _ENCODER.encode((records, [], []))
        places = [i for i, r in enumerate(value) if r.__class__ is not KafkaRecord]
        return _ENCODER.encode((records, [value[i] for i in places], places))

    def decode(self, encoded: bytes) -> list[KafkaRecord | OffsetGap]:
        records, gaps, places = _DECODER.decode(encoded)
        return placed_among(records, zip(places, gaps)) if gaps else records   # type: ignore[return-value]

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return RecordBatch


def placed_among(items: list[Any], placed: Iterable[tuple[int, Any]]) -> list[Any]:
    """`items` with each (position, element) of `placed` (in order of position) put back at its position."""
    out: list[Any] = []
    rest = iter(items)
    for position, element in placed:
        out.extend(itertools.islice(rest, position - len(out)))
        out.append(element)
    out.extend(rest)
    return out


coders.registry.register_coder(RecordBatch, RecordBatchCoder)


class OutboundRecord(msgspec.Struct, frozen=True):
    """A message to produce (result or dead letter), with the input it came from."""
    topic: str
    key: bytes | None
    value: bytes
    source: SourcePosition


class OffsetAck(msgspec.Struct, frozen=True):
    """Offsets of one partition whose outputs the producer has acknowledged.

    `ranges` are half-open `[start, end)` and sorted; they need not be contiguous.
    """
    topic: str
    partition: int
    ranges: tuple[tuple[int, int], ...]


class PartitionSpec(msgspec.Struct, frozen=True):
    """One partition to read: offsets `[start, stop)` (stop = 2**63-1 when unbounded)."""
    topic: str
    partition: int
    start: int
    stop: int


class CommittedOffset(msgspec.Struct, frozen=True):
    """A consumer-group offset `CommitOffsets` has scheduled for commit."""
    topic: str
    partition: int
    offset: int
