"""The restriction tracker of a partition read: Beam's offset tracker, growable when unbounded.

An unbounded read claims offsets in `[start, UNBOUNDED_STOP)`. Beam Python 2.62
has only `OffsetRestrictionTracker`, which splits at a fraction of that nominal
range: a runner's split at 0.5 (Prism and Dataflow split unbounded work; Flink
does not) puts the residual's start near 2**62, an offset no partition has.
Assigned there, the consumer resets to the earliest offset, `try_claim` of an
offset below the restriction raises, and the bundle fails on every retry.

`GrowableOffsetRestrictionTracker` follows Beam Java's `GrowableOffsetRangeTracker`:
while the range is unbounded, splits and progress use an estimate of the
partition's end (its high watermark), so a split point always lies between the
next offset and that estimate. Once split, the primary is a plain bounded range.
"""
from __future__ import annotations

from collections.abc import Callable

from apache_beam.io.iobase import RestrictionProgress
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker

#: Restriction stop of an unbounded partition read.
UNBOUNDED_STOP = 2**63 - 1


class PartitionRange(OffsetRange):
    """Offsets of one partition. The restriction names its partition because
    `RestrictionProvider.create_tracker` gets the restriction alone, and the tracker
    needs the partition's end."""

    def __init__(self, topic: str, partition: int, start: int, stop: int) -> None:
        super().__init__(start, stop)
        self.topic = topic
        self.partition = partition

    def split_at(self, split_pos: int) -> tuple[PartitionRange, PartitionRange]:
        return (PartitionRange(self.topic, self.partition, self.start, split_pos),
                PartitionRange(self.topic, self.partition, split_pos, self.stop))


class GrowableOffsetRestrictionTracker(OffsetRestrictionTracker):
    """`OffsetRestrictionTracker` whose unbounded range splits and reports progress against
    `estimate_end()` (None: unknown) instead of 2**63-1; a bounded range behaves as in Beam."""

    def __init__(self, restriction: OffsetRange, estimate_end: Callable[[], int | None]) -> None:
        super().__init__(restriction)
        self._estimate_end = estimate_end

    def is_bounded(self) -> bool:
        return self._range.stop != UNBOUNDED_STOP

    def try_split(self, fraction_of_remainder: float) -> tuple[OffsetRange, OffsetRange] | None:
        if self.is_bounded():
            return super().try_split(fraction_of_remainder)
        if self._checkpointed:
            return None
        cur = self._next() - 1
        end = self._end()
        # As Beam Java: cur + max(1, (end - cur) x fraction), never past the estimated end,
        # so the residual starts at an offset the partition has (or its next one).
        split = min(end, cur + max(1, int((end - cur) * fraction_of_remainder)))
        if fraction_of_remainder == 0:
            self._checkpointed = True
        self._range, residual = self._range.split_at(split)
        return self._range, residual

    def current_progress(self) -> RestrictionProgress:
        if self.is_bounded():
            return super().current_progress()
        completed = self._next() - self._range.start
        remaining = self._end() - self._next()
        if completed == remaining == 0:
            # Nothing done and no known backlog; 0/0 would break the runner's fraction.
            return RestrictionProgress(fraction=0.0)
        return RestrictionProgress(completed=completed, remaining=remaining)

    def _next(self) -> int:
        """The first offset not yet attempted."""
        return self._range.start if self._last_claim_attempt is None else self._last_claim_attempt + 1

    def _end(self) -> int:
        """The estimated end, never below the next offset (the estimate may be stale or missing)."""
        return max(self._estimate_end() or 0, self._next())
