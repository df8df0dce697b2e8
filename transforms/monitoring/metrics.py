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
from transforms.monitoring.telemetry import TELEMETRY, Telemetry


class _Handle:
    _beam_factory: Callable[[str, str], Any]

    def __init__(self, spec: MetricSpec, telemetry: Telemetry) -> None:
        self.spec = spec
        self._telemetry = telemetry
        self._beam: dict[tuple[tuple[str, object], ...], Any] = {}

    def _beam_metric(self, labels: dict[str, object]) -> Any:
        if self.spec.beam is None:
            return None
        key = tuple(sorted(labels.items()))
        metric = self._beam.get(key)
        if metric is None:
            if set(labels) != set(self.spec.labels):
                raise ValueError(f"metric {self.spec.name} takes labels {self.spec.labels}, got {sorted(labels)}")
            namespace, name = self.spec.beam_key(**labels).split("/", 1)
            metric = self._beam[key] = type(self)._beam_factory(namespace, name)
        return metric


class Counter(_Handle):
    _beam_factory = staticmethod(Metrics.counter)

    def inc(self, value: int = 1, **labels: object) -> None:
        if not value:
            return
        beam = self._beam_metric(labels)
        if beam is not None:
            beam.inc(value)
        self._telemetry.inc(self.spec.name, value, **labels)


class Gauge(_Handle):
    _beam_factory = staticmethod(Metrics.gauge)

    def set(self, value: float, **labels: object) -> None:
        beam = self._beam_metric(labels)
        if beam is not None:
            beam.set(int(value))
        self._telemetry.set(self.spec.name, value, **labels)


class Distribution(_Handle):
    _beam_factory = staticmethod(Metrics.distribution)

    def observe(self, value: float, **labels: object) -> None:
        beam = self._beam_metric(labels)
        if beam is not None:
            beam.update(int(value))   # Beam distributions are integers
        self._telemetry.observe(self.spec.name, value, **labels)


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
