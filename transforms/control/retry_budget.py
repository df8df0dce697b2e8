"""Limits retries that keep failing, so an outage cannot become a retry storm.

A token bucket in the spirit of gRPC retry throttling, Finagle's RetryBudget
and botocore's retry quota:
- every first attempt deposits `ratio` tokens (retries <= ~10 % of traffic);
- a small reserve refills at `min_per_s`, so a client with no traffic can still
  probe a recovering service;
- a retry withdraws one token and gets it back if it succeeds: retries that
  work are not amplification, and refunding them lets a backlog of waiting
  retries drain quickly once the service is back.
Callers that find the bucket empty wait (backpressure) instead of failing.
"""
from __future__ import annotations

import threading

from transforms.control.clock import SYSTEM_CLOCK, Clock


class RetryBudget:
    def __init__(self, *, ratio: float, min_per_s: float, max_tokens: float, clock: Clock = SYSTEM_CLOCK) -> None:
        if not 0 <= ratio <= 1 or min_per_s < 0 or max_tokens < 1:
            raise ValueError("retry budget needs 0 <= ratio <= 1, min_per_s >= 0, max_tokens >= 1")
        self._ratio = ratio
        self._min_per_s = min_per_s
        self._max = max_tokens
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = max_tokens
        self._last = clock.now()
        self.withdrawn = 0
        self.denied = 0

    def _refill(self) -> None:
        now = self._clock.now()
        self._tokens = min(self._max, self._tokens + (now - self._last) * self._min_per_s)
        self._last = now

    @property
    def tokens(self) -> float:
        with self._lock:
            self._refill()
            return self._tokens

    def on_first_attempt(self) -> None:
        with self._lock:
            self._refill()
            self._tokens = min(self._max, self._tokens + self._ratio)

    def try_withdraw(self) -> bool:
        """Takes one retry token if available."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                self.withdrawn += 1
                return True
            self.denied += 1
            return False

    def refund(self) -> None:
        """A retry succeeded: give its token back."""
        with self._lock:
            self._refill()
            self._tokens = min(self._max, self._tokens + 1.0)

    def seconds_until_token(self) -> float:
        """Lower bound on the wait before a withdrawal can succeed."""
        with self._lock:
            self._refill()
            missing = 1.0 - self._tokens
            if missing <= 0:
                return 0.0
            return missing / self._min_per_s if self._min_per_s > 0 else float("inf")
