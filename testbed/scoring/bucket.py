"""Token bucket whose rate may change between calls (capacity faults, live config).

The bucket never reads a clock itself: callers pass ``now`` so the arithmetic is
unit-testable and one request sees one consistent instant.
"""
from __future__ import annotations

import math


class TokenBucket:
    """``burst`` tokens at most, refilled at the rate given on each call.

    ``tokens`` may go below zero only through :meth:`charge` (overload mode),
    which models rejected work that still costs the backend capacity.
    """

    def __init__(self, burst: float, now: float) -> None:
        self.burst = burst
        self.tokens = burst
        self._last = now

    def refill(self, now: float, rate: float) -> None:
        """Credit the time since the last call at ``rate`` (call before changing the rate)."""
        if now > self._last:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * rate)
            self._last = now

    def try_take(self, now: float, rate: float) -> bool:
        """Spend one token if a whole one is available."""
        self.refill(now, rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def charge(self, amount: float, floor: float) -> None:
        """Spend ``amount`` even without tokens, but never below ``floor``."""
        self.tokens = max(floor, self.tokens - amount)

    def refund(self, amount: float) -> None:
        self.tokens = min(self.burst, self.tokens + amount)

    def set_burst(self, burst: float) -> None:
        self.burst = burst
        self.tokens = min(self.tokens, burst)

    def remaining(self) -> int:
        """Whole tokens left, for the ``RateLimit`` header's ``r``."""
        return max(0, math.floor(self.tokens))

    def seconds_until_token(self, rate: float) -> float:
        """Time until a whole token is available at ``rate`` (0 if one is now)."""
        return max(0.0, (1.0 - self.tokens) / rate)
