"""One handle per catalogued metric, updating the Beam metric and the live registry together.

Beam metrics are what a finished job reports (the summary, Flink's metric
system); the live registry (`TELEMETRY`) is what a running worker exports and
shows. A handle keeps the two from drifting apart: the name, kind and labels
come from `catalogue.CATALOGUE`, and one call records both. Beam records an
update only on a thread that is running a bundle (elsewhere that half is a
no-op), so data-path code updates handles from its DoFn methods.

    EVENTS_IN = metrics.counter("events_in")
    EVENTS_IN.inc()
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apache_beam.metrics import Metrics

from transforms.monitoring.catalogue import CATALOGUE, COUNTER, DISTRIBUTION, GAUGE, MetricSpec
from transforms.monitoring.telemetry import TELEMETRY, Telemetry, telemetry_key


class _Handle:
    """The Beam metric and the registry key of one label set, resolved once (the hot path is per event)."""
    _beam_factory: Callable[[str, str], Any]

    def __init__(self, spec: MetricSpec, telemetry: Telemetry, labels: dict[str, object] | None = None) -> None:
        if labels is None and spec.labels:
            labels = {}                                   # a labelled family: bind() resolves each label set
        elif set(labels or {}) != set(spec.labels):
            raise ValueError(f"metric {spec.name} takes labels {spec.labels}, got {sorted(labels or {})}")
        self.spec = spec
        self._telemetry = telemetry
        self._labels = labels or {}
        self._family = bool(spec.labels) and not self._labels
        self._key = telemetry_key(spec.name, self._labels)
        self._beam = None
        if spec.beam is not None and not self._family:
            namespace, name = spec.beam_key(**self._labels).split("/", 1)
            self._beam = type(self)._beam_factory(namespace, name)
        self._bound: dict[tuple[tuple[str, object], ...], Any] = {}

    def bind(self, **labels: object) -> Any:
        """The handle of one label set of a labelled metric (cached)."""
        key = tuple(sorted(labels.items()))
        handle = self._bound.get(key)
        if handle is None:
            handle = self._bound[key] = type(self)(self.spec, self._telemetry, labels)
        return handle

    def _resolve(self, labels: dict[str, object]) -> _Handle:
        if labels:
            return self.bind(**labels)
        if self._family:
            raise ValueError(f"metric {self.spec.name} needs its labels {self.spec.labels}")
        return self


class Counter(_Handle):
    _beam_factory = staticmethod(Metrics.counter)

    def inc(self, value: int = 1, **labels: object) -> None:
        if not value:
            return
        handle = self._resolve(labels) if labels or self._family else self
        if handle._beam is not None:
            handle._beam.inc(value)
        self._telemetry.add(handle._key, value)


class Gauge(_Handle):
    _beam_factory = staticmethod(Metrics.gauge)

    def set(self, value: float, **labels: object) -> None:
        handle = self._resolve(labels) if labels or self._family else self
        if handle._beam is not None:
            handle._beam.set(int(value))
        self._telemetry.put(handle._key, value)


class Distribution(_Handle):
    _beam_factory = staticmethod(Metrics.distribution)

    def observe(self, value: float, **labels: object) -> None:
        handle = self._resolve(labels) if labels or self._family else self
        if handle._beam is not None:
            handle._beam.update(int(value))   # Beam distributions are integers
        self._telemetry.sample(handle._key, value)


_KINDS: dict[str, type[_Handle]] = {COUNTER: Counter, GAUGE: Gauge, DISTRIBUTION: Distribution}


def _handle(name: str, kind: str, telemetry: Telemetry) -> Any:
    spec = CATALOGUE.get(name)
    if spec is None:
        raise KeyError(f"{name!r} is not in transforms/monitoring/catalogue.py")
    if spec.kind != kind:
        raise TypeError(f"metric {name} is a {spec.kind}, not a {kind}")
    return _KINDS[kind](spec, telemetry)


def counter(name: str, telemetry: Telemetry = TELEMETRY) -> Counter:
    return _handle(name, COUNTER, telemetry)


def gauge(name: str, telemetry: Telemetry = TELEMETRY) -> Gauge:
    return _handle(name, GAUGE, telemetry)


def distribution(name: str, telemetry: Telemetry = TELEMETRY) -> Distribution:
    return _handle(name, DISTRIBUTION, telemetry)
