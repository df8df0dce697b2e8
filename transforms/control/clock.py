"""Time source injected into every controller, so tests run on a fake clock and the
simulation in simulated time."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread."""

    def wait(self, condition: threading.Condition, predicate: Callable[[], bool], seconds: float) -> None:
        """With `condition` held: block until `predicate()` holds or `seconds` pass."""


class SystemClock:
    """The real monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, condition: threading.Condition, predicate: Callable[[], bool], seconds: float) -> None:
        if seconds > 0:
            condition.wait_for(predicate, timeout=seconds)


SYSTEM_CLOCK = SystemClock()
