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
        self._since = 0.0          # when `_waiting` last rose from 0 (or the last take, if later)
        self._accrued_s = 0.0      # closed waiting time not taken yet

    def begin(self) -> None:
        with self._lock:
            if self._waiting == 0:
                self._since = self._clock.now()
            self._waiting += 1

    def end(self) -> None:
        with self._lock:
            self._waiting -= 1
            if self._waiting == 0:
                self._accrued_s += self._clock.now() - self._since

    def take_ms(self) -> int:
        """Whole milliseconds of waiting since the previous take (a wait in progress counts up to now);
        the fraction stays for the next take, so the takes add up to the union."""
        with self._lock:
            now = self._clock.now()
            if self._waiting:
                self._accrued_s += now - self._since
                self._since = now
            ms = int(self._accrued_s * 1000)
            self._accrued_s -= ms / 1000
            return ms
