"""A discrete-event loop and the clock it gives the control classes: simulated seconds, no sleeps.

The throttling classes in `transforms.control` take an injected `Clock`; here
that clock reads the simulation's time, and nothing may block on it (a call
to `sleep` is a bug in the driver, which must schedule a wake-up instead).
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class Simulation:
    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def at(self, t: float, fn: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self._queue, (max(t, self.now), next(self._seq), fn, args))

    def after(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + max(0.0, delay_s), fn, *args)

    def every(self, period_s: float, fn: Callable[[], Any], until: float) -> None:
        """Calls `fn` every `period_s` from now until `until`."""
        def tick() -> None:
            fn()
            if self.now + period_s <= until:
                self.after(period_s, tick)
        self.after(period_s, tick)

    def run(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            t, _, fn, args = heapq.heappop(self._queue)
            self.now = t
            fn(*args)
        self.now = until


class SimClock:
    """The `transforms.control.clock.Clock` of a simulation."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def now(self) -> float:
        return self._sim.now

    def sleep(self, seconds: float) -> None:
        raise RuntimeError("nothing blocks in a simulation: the driver schedules the wake-up instead")
