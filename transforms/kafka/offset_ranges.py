"""Acknowledged Kafka offsets of one partition, as merged half-open ranges.

Acks arrive out of order (shards and batches finish independently); the
committed offset may only move over a contiguous acknowledged run, so a
crash never skips an offset whose output was not yet written.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable

Range = tuple[int, int]


class OffsetRangeSet:
    """Sorted, disjoint, non-adjacent half-open ranges `[start, end)`.

    Its size is bounded by the number of gaps between acknowledged runs,
    which is what keeps the committer's per-partition state small.
    """

    def __init__(self, ranges: Iterable[Range] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Add `[start, end)`, merging with overlapping or touching ranges."""
        if end < start:
            raise ValueError(f"invalid range [{start}, {end})")
        if end == start:
            return
        if self._ends and self._ends[-1] == start:   # the common case: the next offsets in order
            self._ends[-1] = end
            return
        # First range whose end reaches `start`, last range whose start reaches `end`.
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def add_all(self, ranges: Iterable[Range]) -> None:
        """Add every range of `ranges`, in any order: sorted and joined into runs first, so each
        run merges once (cheaper than `add` per range when they come out of order)."""
        runs: list[list[int]] = []
        for start, end in sorted(ranges):
            if end < start:
                raise ValueError(f"invalid range [{start}, {end})")
            if runs and start <= runs[-1][1]:
                if end > runs[-1][1]:
                    runs[-1][1] = end
            elif end > start:
                runs.append([start, end])
        for start, end in runs:
            self.add(start, end)

    def advance(self, base: int) -> int:
        """Return the end of the contiguous run starting at `base` (or `base`).

        Everything below the returned offset is dropped: it is committed.
        """
        cut = bisect.bisect_right(self._starts, base)
        if cut and self._ends[cut - 1] > base:
            base = self._ends[cut - 1]
        del self._starts[:cut]
        del self._ends[:cut]
        return base

    @property
    def ranges(self) -> tuple[Range, ...]:
        return tuple(zip(self._starts, self._ends))

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"OffsetRangeSet({list(self.ranges)})"


class PendingRanges:
    """Ranges that arrive one at a time in any order, merged into an `OffsetRangeSet` a few
    thousand at a time (`OffsetRangeSet.add_all`).

    The writer's records come from interleaved shards, so most of their offsets would land between
    two ranges: a bisect and a list insertion each (3.5 % of a drain's samples). At most
    `MERGE_EVERY` ranges wait unmerged, so a bundle that runs for hours holds no more than that.
    """

    MERGE_EVERY = 4096

    def __init__(self) -> None:
        self._merged = OffsetRangeSet()
        self._waiting: list[Range] = []

    def add(self, start: int, end: int) -> None:
        self._waiting.append((start, end))
        if len(self._waiting) >= self.MERGE_EVERY:
            self.merged()

    def merged(self) -> OffsetRangeSet:
        """Every range added so far, merged."""
        if self._waiting:
            self._merged.add_all(self._waiting)
            self._waiting = []
        return self._merged
