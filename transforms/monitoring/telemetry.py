"""Process-wide counters and gauges that can be read while a job runs.

Beam metrics reach the launcher only when a portable job ends, so a running
(streaming) job needs its own export path. The metric handles in
`transforms.monitoring.metrics` record every catalogued metric here as well
as in Beam; the Cloud Monitoring exporter and the live progress line read
snapshots of this registry from within the worker process, and listeners
(the benchmark's latency tap) see every observed value as it happens.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from transforms.monitoring.catalogue import CATALOGUE

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]
Listener = Callable[[str, float, Labels], None]


def telemetry_key(name: str, labels: dict[str, object]) -> Key:
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


_key = telemetry_key


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
    buckets: list[int] = field(default_factory=lambda: [0] * (FINITE_BUCKETS + 2))

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

    def copy(self) -> Distribution:
        return Distribution(self.count, self.total, self.minimum, self.maximum, self.m2, list(self.buckets))


def _catalogued(name: str) -> None:
    if name not in CATALOGUE:
        raise KeyError(f"{name!r} is not in transforms/monitoring/catalogue.py")


@dataclass
class Snapshot:
    taken_at: float
    counters: dict[Key, int] = field(default_factory=dict)
    gauges: dict[Key, float] = field(default_factory=dict)
    distributions: dict[Key, Distribution] = field(default_factory=dict)

    def counter(self, name: str, **labels: object) -> int:
        _catalogued(name)
        if labels:
            return self.counters.get(_key(name, labels), 0)
        return sum(v for (n, _), v in self.counters.items() if n == name)

    def gauge(self, name: str, **labels: object) -> float | None:
        _catalogued(name)
        return self.gauges.get(_key(name, labels))


class Telemetry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started_at = time.time()
        self._counters: dict[Key, int] = {}
        self._gauges: dict[Key, float] = {}
        self._distributions: dict[Key, Distribution] = {}
        self._samplers: dict[str, Callable[[], None]] = {}
        self._listeners: list[Listener] = []

    def sampler(self, name: str, fn: Callable[[], None]) -> None:
        """Registers (or replaces) a callback that `set`s live gauges just before each snapshot,
        so a gauge such as in_flight is current even when nothing completes."""
        with self._lock:
            self._samplers[name] = fn

    def remove_sampler(self, name: str) -> None:
        with self._lock:
            self._samplers.pop(name, None)

    def add_listener(self, listener: Listener) -> None:
        """`listener(name, value, labels)` is called for every `observe`, outside the lock."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [x for x in self._listeners if x is not listener]

    def inc(self, name: str, value: int = 1, **labels: object) -> None:
        self.add(_key(name, labels), value)

    def set(self, name: str, value: float, **labels: object) -> None:
        self.put(_key(name, labels), value)

    def observe(self, name: str, value: float, **labels: object) -> None:
        self.sample(_key(name, labels), value)

    # The same by a key made once (`telemetry_key`): what the metric handles call per event.

    def add(self, key: Key, value: int) -> None:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + value

    def put(self, key: Key, value: float) -> None:
        with self._lock:
            self._gauges[key] = value

    def sample(self, key: Key, value: float) -> None:
        with self._lock:
            distribution = self._distributions.get(key)
            if distribution is None:
                distribution = self._distributions[key] = Distribution()
            distribution.add(value)
            listeners = self._listeners
        for listener in listeners:
            listener(key[0], value, key[1])

    def snapshot(self) -> Snapshot:
        with self._lock:
            samplers = list(self._samplers.values())
        for sample in samplers:
            sample()
        with self._lock:
            return Snapshot(time.time(), dict(self._counters), dict(self._gauges),
                            {k: d.copy() for k, d in self._distributions.items()})


TELEMETRY = Telemetry()
