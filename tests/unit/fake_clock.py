"""A deterministic clock for control-logic tests: sleep() advances time."""
from __future__ import annotations

import threading
from collections.abc import Callable


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept = 0.0

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._now += seconds
                self.slept += seconds

    def advance(self, seconds: float) -> None:
        self.sleep(seconds)

    def wait(self, condition: threading.Condition, predicate: Callable[[], bool], seconds: float) -> None:
        """Nothing else runs on a fake clock, so a wait lasts its full length unless already satisfied."""
        if not predicate():
            self.sleep(seconds)
