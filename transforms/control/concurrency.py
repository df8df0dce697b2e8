"""How many requests may be in flight: what the rate needs, under a learned and a hard ceiling.

By Little's law a client that sends `rate` requests/s with latency `L` has
`rate x L` requests in flight. A fixed cap sized for normal latency starves the
client when latency rises (32 in flight / 0.2 s = 160 req/s, half of a 333 req/s
quota), and a cap sized for the worst case lets a slow service be flooded. So
the limit follows the need - `rate x latency x headroom` - between `floor` and
the hard ceiling (`--max_in_flight`, the job's share of it), which the service
never sees exceeded. Concurrency rejections - a 503, 504 or timeout while other
requests still succeed - mean the service has fewer slots than we thought: the
learned ceiling drops to `shrink` x the in-flight peak of that tick and creeps
back by one slot per tick. Latency alone never shrinks it (the rate controller
holds its growth instead). During an outage nothing is learned.
"""
from __future__ import annotations

import math
import statistics
import threading

from transforms.control.signals import AttemptKind, AttemptResult

CONCURRENCY_STATUS = frozenset({503, 504})


class ConcurrencyLimit:
    def __init__(self, hard_cap: int, *, floor: int, headroom: float, shrink: float = 0.8,
                 smoothing: float = 0.5) -> None:
        if hard_cap < 1 or not 1 <= floor <= hard_cap:
            raise ValueError("concurrency needs 1 <= floor <= hard_cap")
        if headroom < 1 or not 0 < shrink < 1 or not 0 < smoothing <= 1:
            raise ValueError("concurrency needs headroom >= 1, 0 < shrink < 1, 0 < smoothing <= 1")
        self.floor, self.headroom, self.shrink, self.smoothing = floor, headroom, shrink, smoothing
        self._lock = threading.Lock()
        self._hard = hard_cap
        self._learned = math.inf          # lowered by concurrency rejections, creeps back to inf
        self._latency_s: float | None = None
        self._samples: list[float] = []
        self._rejections = 0
        self._successes = 0
        self.limit = hard_cap

    @property
    def hard_cap(self) -> int:
        return self._hard

    def set_hard_cap(self, hard_cap: int) -> None:
        """The hard cap wins over the floor: it is this worker's share of the job's cap."""
        with self._lock:
            self._hard = max(1, hard_cap)

    def record(self, result: AttemptResult, latency_s: float) -> None:
        with self._lock:
            if result.kind is AttemptKind.SUCCESS:
                self._successes += 1
                self._samples.append(latency_s)
            elif result.reason == "timeout" or result.status in CONCURRENCY_STATUS:
                self._rejections += 1

    def update(self, rate: float, peak_in_flight: int, outage: bool) -> int:
        """Once per tick: the new limit for `rate` requests/s."""
        with self._lock:
            samples, self._samples = self._samples, []
            rejections, self._rejections = self._rejections, 0
            successes, self._successes = self._successes, 0
            if outage:
                return self.limit
            if samples:
                median = statistics.median(samples)
                self._latency_s = median if self._latency_s is None else (
                    self.smoothing * median + (1 - self.smoothing) * self._latency_s)
            if rejections and successes:
                self._learned = max(float(self.floor), math.floor(self.shrink * max(peak_in_flight, self.floor)))
            elif self._learned + 1 >= self._hard:
                self._learned = math.inf
            else:
                self._learned += 1
            need = self._hard if self._latency_s is None else math.ceil(rate * self._latency_s * self.headroom) + 1
            self.limit = int(min(max(self.floor, min(need, self._learned)), self._hard))
            return self.limit
