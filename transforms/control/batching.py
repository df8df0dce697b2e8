"""When a batch of events is complete: at most N events and B bytes (and, by construction, no
older than the bundle it was formed in - see transforms/scoring/score_in_batches.py).

The byte bound is strict: an event that would overflow the batch closes it
first, so no request exceeds `max_bytes` unless a single event does (such an
event travels alone; the parser already refuses oversized messages).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPolicy:
    """Built from `ThrottleSettings.batch_size` and `max_batch_bytes` (their defaults live there)."""
    max_events: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError("batch size must be >= 1")
        if self.max_bytes < 1:
            raise ValueError("max batch bytes must be >= 1")

    def fits(self, count: int, nbytes: int, item_bytes: int) -> bool:
        """Can an item of `item_bytes` join a batch of `count` events / `nbytes`?"""
        if count == 0:
            return True
        return count + 1 <= self.max_events and nbytes + item_bytes <= self.max_bytes

    def full(self, count: int, nbytes: int) -> bool:
        return count >= self.max_events or nbytes >= self.max_bytes
