"""Process-wide counters and gauges that can be read while a job runs.

Beam metrics reach the launcher only when a portable job ends, so a running
(streaming) job needs its own export path. Every place that bumps a Beam
metric also records it here; the Cloud Monitoring exporter and the live
progress line read snapshots of this registry from within the worker process.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

Labels = Tuple[Tuple[str, str], ...]
Key = Tuple[str, Labels]


def _key(name: str, labels: Dict[str, object]) -> Key:
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


#: Histogram buckets shared by every distribution (Cloud Monitoring's exponential
#: layout): bucket 0 is < SCALE, bucket i covers [SCALE*GROWTH^(i-1), SCALE*GROWTH^i),
#: the last one is >= SCALE*GROWTH^FINITE_BUCKETS (65,536: ms of latency, events per batch).
SCALE, GROWTH, FINITE_BUCKETS = 1.0, 2.0, 16


def bucket_of(value: float) -> int:
    if value < SCALE:
        return 0
    return min(FINITE_BUCKETS + 1, math.floor(math.log2(value / SCALE) / math.log2(GROWTH)) + 1)


@dataclass
class Distribution:
    count: int = 0
    total: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    # Sum of squared deviations from the mean (Welford), for a variance without overflow.
    m2: float = 0.0
    buckets: List[int] = field(default_factory=lambda: [0] * (FINITE_BUCKETS + 2))

    def add(self, value: float) -> None:
        old_mean = self.mean
        self.count += 1
        self.total += value
        self.m2 += (value - old_mean) * (value - self.mean)
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self.buckets[bucket_of(value)] += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def copy(self) -> "Distribution":
        return Distribution(self.count, self.total, self.minimum, self.maximum, self.m2, list(self.buckets))


@dataclass
class Snapshot:
    taken_at: float
    counters: Dict[Key, int] = field(default_factory=dict)
    gauges: Dict[Key, float] = field(default_factory=dict)
    distributions: Dict[Key, Distribution] = field(default_factory=dict)

    def counter(self, name: str, **labels: object) -> int:
        if labels:
            return self.counters.get(_key(name, labels), 0)
        return sum(v for (n, _), v in self.counters.items() if n == name)

    def gauge(self, name: str, **labels: object) -> float | None:
        return self.gauges.get(_key(name, labels))


class Telemetry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started_at = time.time()
        self._counters: Dict[Key, int] = {}
        self._gauges: Dict[Key, float] = {}
        self._distributions: Dict[Key, Distribution] = {}
        self._samplers: Dict[str, Callable[[], None]] = {}

    def sampler(self, name: str, fn: Callable[[], None]) -> None:
        """Registers (or replaces) a callback that `set`s live gauges just before each snapshot,
        so a gauge such as in_flight is current even when nothing completes."""
        with self._lock:
            self._samplers[name] = fn

    def inc(self, name: str, value: int = 1, **labels: object) -> None:
        key = _key(name, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + value

    def set(self, name: str, value: float, **labels: object) -> None:
        with self._lock:
            self._gauges[_key(name, labels)] = value

    def observe(self, name: str, value: float, **labels: object) -> None:
        key = _key(name, labels)
        with self._lock:
            self._distributions.setdefault(key, Distribution()).add(value)

    def snapshot(self) -> Snapshot:
        with self._lock:
            samplers = list(self._samplers.values())
        for sample in samplers:
            sample()
        with self._lock:
            return Snapshot(time.time(), dict(self._counters), dict(self._gauges),
                            {k: d.copy() for k, d in self._distributions.items()})


TELEMETRY = Telemetry()
