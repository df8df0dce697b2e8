"""A thread-safe pacer that spaces request starts at the current rate.

It is a token bucket expressed as virtual scheduling (GCRA): a caller takes
the next free slot under a lock and sleeps outside it, so waiters are served
in order and none of them holds the lock while waiting. Unused time
accumulates up to `burst` slots, as a bucket's tokens would.

A slot is only booked when it lies within `horizon_s` of now; a caller
further back waits one horizon and asks again. So when the rate falls, at
most one horizon of starts stays booked at the old rate - unbounded booking
let a 20 s outage at the floor rate leave 23 s of reservations behind it,
which kept the client idle long after the service came back.
"""
from __future__ import annotations

import threading

from transforms.control.clock import SYSTEM_CLOCK, Clock


class Pacer:
    def __init__(self, rate: float, burst: float = 1.0, horizon_s: float = 0.25,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if rate <= 0 or horizon_s <= 0:
            raise ValueError("pacer needs rate > 0 and horizon_s > 0")
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = rate
        self._burst = max(1.0, burst)
        self._horizon_s = horizon_s
        now = clock.now()
        self._next_slot = now
        self._last_slot = now - 1.0 / rate

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Re-times the next free slot at the new rate (the ones already booked stay)."""
        with self._lock:
            self._rate = max(rate, 1e-3)
            self._next_slot = self._last_slot + 1.0 / self._rate

    def reserve(self) -> float | None:
        """Books the next slot if it is within the horizon and returns the wait until it;
        None when it is further away (wait `horizon_s`, then ask again)."""
        with self._lock:
            now = self._clock.now()
            slot = max(self._next_slot, now - (self._burst - 1.0) / self._rate)
            if slot - now > self._horizon_s:
                return None
            self._last_slot = slot
            self._next_slot = slot + 1.0 / self._rate
            return max(0.0, slot - now)

    @property
    def horizon_s(self) -> float:
        return self._horizon_s
