"""Caps the requests outstanding at the service, shared by every thread of a process."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InFlightLimiter:
    """A resizable semaphore that records the peak it allowed (overall and since the last look)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("in-flight limit must be >= 1")
        self._cond = threading.Condition()
        self._limit = limit
        self._in_flight = 0
        self._peak = 0
        self._recent_peak = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def peak(self) -> int:
        return self._peak

    def take_recent_peak(self) -> int:
        """The peak since the previous call (at least what is in flight now)."""
        with self._cond:
            peak, self._recent_peak = self._recent_peak, self._in_flight
            return peak

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self._limit = max(1, limit)
            self._cond.notify_all()

    def try_acquire(self) -> bool:
        with self._cond:
            if self._in_flight >= self._limit:
                return False
            self._take()
            return True

    def acquire(self) -> None:
        with self._cond:
            while self._in_flight >= self._limit:
                self._cond.wait()
            self._take()

    def _take(self) -> None:
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        self._recent_peak = max(self._recent_peak, self._in_flight)

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify()

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()
