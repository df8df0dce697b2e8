"""Scheduled faults: capacity drops, outages and latency spikes in time windows.

Faults are what turn the service into a test bench: the pipeline's throttle is
judged by how it behaves while a window is active and, above all, after it ends.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KINDS = ("capacity", "outage", "latency", "refused")
_FIELDS = {"kind", "start_s", "duration_s", "factor"}


class FaultError(ValueError):
    """A fault description that cannot be scheduled (message is one line)."""


@dataclass(frozen=True)
class Fault:
    """``kind`` during [start_s, start_s + duration_s) relative to some origin.

    ``factor`` multiplies the rate (capacity) or the latency (latency); an
    outage (503 + Retry-After) and a refused window (the process stops
    listening and drops its connections, as if it had died) ignore it.
    """

    kind: str
    start_s: float
    duration_s: float
    factor: float = 1.0


def _number(obj: dict[str, Any], key: str, default: float | None) -> float:
    value = obj.get(key, default)
    if value is None:
        raise FaultError(f"fault needs {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FaultError(f"fault {key!r} must be a finite number")
    return float(value)


def parse_fault(obj: object) -> Fault:
    """Validate one fault object (from the --faults flag or POST /admin/fault)."""
    if not isinstance(obj, dict):
        raise FaultError("a fault must be a JSON object")
    unknown = set(obj) - _FIELDS
    if unknown:
        raise FaultError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise FaultError(f"fault 'kind' must be one of {', '.join(KINDS)}")
    fault = Fault(
        kind=kind,
        start_s=_number(obj, "start_s", 0.0),
        duration_s=_number(obj, "duration_s", None),
        factor=_number(obj, "factor", 1.0 if kind in ("outage", "refused") else None),
    )
    if fault.start_s < 0:
        raise FaultError("fault 'start_s' must be >= 0")
    if fault.duration_s <= 0:
        raise FaultError("fault 'duration_s' must be > 0")
    if fault.factor <= 0:
        raise FaultError("fault 'factor' must be > 0 (use an outage for no capacity)")
    return fault


def parse_faults(obj: object) -> list[Fault]:
    """Validate the --faults list."""
    if not isinstance(obj, list):
        raise FaultError("--faults must be a JSON list of fault objects")
    return [parse_fault(item) for item in obj]


@dataclass(frozen=True)
class FaultState:
    """What the active faults mean for one request."""

    capacity_factor: float = 1.0
    latency_factor: float = 1.0
    outage_remaining_s: float = 0.0
    refused_remaining_s: float = 0.0


@dataclass(frozen=True)
class _Window:
    fault: Fault
    start: float
    end: float


class FaultSchedule:
    """Fault windows on the service's monotonic clock; overlapping factors multiply."""

    def __init__(self) -> None:
        self._windows: list[_Window] = []

    def add(self, fault: Fault, origin: float) -> None:
        start = origin + fault.start_s
        self._windows.append(_Window(fault, start, start + fault.duration_s))

    def _active(self, now: float) -> list[_Window]:
        self._windows = [w for w in self._windows if w.end > now]
        return [w for w in self._windows if w.start <= now]

    def state(self, now: float) -> FaultState:
        if not self._windows:
            return FaultState()
        capacity = latency = 1.0
        outage = refused = 0.0
        for w in self._active(now):
            if w.fault.kind == "capacity":
                capacity *= w.fault.factor
            elif w.fault.kind == "latency":
                latency *= w.fault.factor
            elif w.fault.kind == "outage":
                outage = max(outage, w.end - now)
            else:
                refused = max(refused, w.end - now)
        return FaultState(capacity, latency, outage, refused)

    def describe(self, now: float) -> list[dict[str, Any]]:
        """Active faults for /stats, with the seconds each has left."""
        return [
            {
                "kind": w.fault.kind,
                "factor": w.fault.factor,
                "duration_s": w.fault.duration_s,
                "remaining_s": round(w.end - now, 3),
            }
            for w in self._active(now)
        ]
