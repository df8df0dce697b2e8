"""Exponential backoff with full jitter that honours the server's Retry-After.

Full jitter (`random(0, min(cap, base * 2**n))`) spreads retries best of the
AWS-simulated strategies (fewest calls per client). A server's Retry-After is a
floor: we never retry earlier than asked, but we add jitter on top so clients
told the same value do not return together.
"""
from __future__ import annotations

import random


class FullJitterBackoff:
    def __init__(self, *, base_s: float, cap_s: float, max_retry_after_s: float,
                 rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base_s = base_s
        self.cap_s = cap_s
        self.max_retry_after_s = max_retry_after_s
        self._rng = rng or random.Random()

    def delay(self, retry: int, retry_after_s: float | None = None) -> float:
        """Delay before retry number `retry` (1 = first retry)."""
        window = min(self.cap_s, self.base_s * (2 ** max(0, retry - 1)))
        jittered = self._rng.uniform(0.0, window)
        if retry_after_s is None:
            return jittered
        floor = min(max(0.0, retry_after_s), self.max_retry_after_s)
        return floor + self._rng.uniform(0.0, min(window, max(floor, self.base_s)))
