"""Stops a job whose enrichment dead-letters most of what it reads.

A dead letter is right for one bad batch; for most of the stream it means the
job, not the data, is wrong (a changed contract, a service that refuses
everything with 422), and dead-lettering at reader speed would commit the
whole backlog as failures. So the breaker watches the share of dead-lettered
events among the last `window` events enriched, and trips when it exceeds
`max_share` - only once the window is full, so a few early failures in a
small drain do not stop a healthy job.
"""
from __future__ import annotations

import threading
from collections import deque


class DeadLetterBreaker:
    def __init__(self, max_share: float, window: int) -> None:
        if not 0 < max_share <= 1 or window < 1:
            raise ValueError("the breaker needs 0 < max_share <= 1 and window >= 1")
        self.max_share, self.window = max_share, window
        self._lock = threading.Lock()
        self._batches: deque[tuple[int, int]] = deque()   # (events, dead-lettered) per batch, oldest first
        self._events = 0
        self._dead = 0
        self.tripped = False

    def record(self, events: int, dead_lettered: int) -> bool:
        """One batch's outcome; True once the breaker has tripped (it stays tripped)."""
        with self._lock:
            if self.tripped or events <= 0:
                return self.tripped
            self._batches.append((events, dead_lettered))
            self._events += events
            self._dead += dead_lettered
            while self._batches and self._events - self._batches[0][0] >= self.window:
                old_events, old_dead = self._batches.popleft()
                self._events -= old_events
                self._dead -= old_dead
            self.tripped = (self.max_share < 1 and self._events >= self.window
                            and self._dead > self.max_share * self._events)
            return self.tripped

    def describe(self) -> str:
        with self._lock:
            return (f"{self._dead} of the last {self._events} events were dead-lettered "
                    f"(more than {self.max_share:.0%})")
