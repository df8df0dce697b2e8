"""Wall time during which at least one call waited on the throttle (pacer, backoff, retry budget).

The per-call waits overlap - forty batches parked on one backoff for a second
are one second of throttling, not forty - so a sum of them can exceed the
run's wall time many times over. This keeps their union instead: a count of
waiting calls, and the time since it last rose from zero.
"""
from __future__ import annotations

import threading

from transforms.control.clock import SYSTEM_CLOCK, Clock


class WaitTime:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting = 0
        self._since = 0.0          # when `_waiting` last rose from 0
        self._closed_s = 0.0       # waiting time of the intervals that ended
        self._taken_ms = 0

    def begin(self) -> None:
        with self._lock:
            if self._waiting == 0:
                self._since = self._clock.now()
            self._waiting += 1

    def end(self) -> None:
        with self._lock:
            self._waiting -= 1
            if self._waiting == 0:
                self._closed_s += self._clock.now() - self._since

    def total_s(self) -> float:
        """Waiting time so far (a wait in progress counts up to now)."""
        with self._lock:
            return self._closed_s + (self._clock.now() - self._since if self._waiting else 0.0)

    def take_ms(self) -> int:
        """Whole milliseconds of waiting since the previous take; the takes add up to the union."""
        total_ms = int(self.total_s() * 1000)
        with self._lock:
            ms, self._taken_ms = max(0, total_ms - self._taken_ms), max(self._taken_ms, total_ms)
            return ms
