"""A thread-safe pacer that spaces request starts at the current rate.

It is a token bucket expressed as virtual scheduling (GCRA): each caller
reserves the next free slot under a lock and sleeps outside it, so waiters are
served in order and none of them holds the lock while waiting. Unused time
accumulates up to `burst` slots, as a bucket's tokens would.
"""
from __future__ import annotations

import threading

from transforms.control.clock import SYSTEM_CLOCK, Clock


class Pacer:
    def __init__(self, rate: float, burst: float = 1.0, clock: Clock = SYSTEM_CLOCK) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = rate
        self._burst = max(1.0, burst)
        self._next_slot = clock.now()
        self._sent = 0

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._rate = max(rate, 1e-3)

    def reserve(self) -> float:
        """Takes the next slot; returns how long the caller must wait for it."""
        with self._lock:
            now = self._clock.now()
            earliest = now - (self._burst - 1.0) / self._rate
            slot = max(self._next_slot, earliest)
            self._next_slot = slot + 1.0 / self._rate
            self._sent += 1
            return max(0.0, slot - now)

    def acquire(self) -> float:
        """Blocks until the caller may start a request; returns the time waited."""
        wait = self.reserve()
        self._clock.sleep(wait)
        return wait

    @property
    def sent(self) -> int:
        """Slots handed out so far (cumulative; the controller diffs it for utilisation)."""
        return self._sent
