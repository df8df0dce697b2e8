"""Figures from 1 s samples: pure functions over the raw JSON (no I/O, no clocks).

Definitions (all from what the *service* counted, unless named "client"):

* goodput: events scored for the first time per second = Δ`unique_txns` / Δt.
* attempts/s: Δ`attempted_requests` / Δt; 429s/s: Δ`rejected.rate_limit` / Δt.
* 429 share: Δ429 / Δattempted_requests over a window.
* retry amplification: Δ`attempted_items` / Δ`unique_txns` over a window
  (event-attempts sent per event completed; 1.0 = no wasted attempt).
* capacity (events/s): the service's current `capacity_rps` × the batch size.
* Kafka lag: Σ(end offset − committed offset) of the input topic.
* unread: Σ end offset − (Σ committed offset at t0 + events the client read).
* latency percentiles: nearest rank over the client-reported request latencies
  in the window (ours and naive: per attempt; pool and beam: per call, which
  includes urllib3's hidden retries).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Sample = dict[str, Any]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (same rule as the service's /stats)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def _svc(sample: Sample, key: str) -> float | None:
    service = sample.get("service") or {}
    if key.startswith("rejected."):
        value = (service.get("rejected") or {}).get(key.split(".", 1)[1])
    else:
        value = service.get(key)
    return None if value is None else float(value)


def _client_counter(sample: Sample, name: str) -> float | None:
    counters = (sample.get("client") or {}).get("counters") or {}
    if not counters:
        return None
    return float(sum(v for k, v in counters.items() if k == name or k.startswith(name + "|")))


def _client_gauge(sample: Sample, name: str) -> float | None:
    gauges = (sample.get("client") or {}).get("gauges") or {}
    value = gauges.get(name)
    return None if value is None else float(value)


def valid(samples: Sequence[Sample]) -> list[Sample]:
    """Samples with a service reading (a failed /stats poll leaves a gap)."""
    return [s for s in samples if s.get("service")]


# ---- time series -----------------------------------------------------------------------------

Series = list[tuple[float, float]]


def rate_series(samples: Sequence[Sample], value: Callable[[Sample], float | None]) -> Series:
    """(t of the later sample, Δvalue/Δt) between consecutive samples that both have the value."""
    out: Series = []
    prev: tuple[float, float] | None = None
    for s in samples:
        v = value(s)
        if v is None:
            continue
        if prev is not None and s["t"] > prev[0]:
            out.append((s["t"], (v - prev[1]) / (s["t"] - prev[0])))
        prev = (s["t"], v)
    return out


def level_series(samples: Sequence[Sample], value: Callable[[Sample], float | None]) -> Series:
    return [(s["t"], v) for s in samples for v in [value(s)] if v is not None]


def goodput_series(samples: Sequence[Sample]) -> Series:
    return rate_series(samples, lambda s: _svc(s, "unique_txns"))


def attempts_series(samples: Sequence[Sample]) -> Series:
    return rate_series(samples, lambda s: _svc(s, "attempted_requests"))


def r429_series(samples: Sequence[Sample]) -> Series:
    return rate_series(samples, lambda s: _svc(s, "rejected.rate_limit"))


def r5xx_series(samples: Sequence[Sample]) -> Series:
    return rate_series(samples, lambda s: sum(_svc(s, k) or 0.0 for k in ("rejected.outage",
                                                                          "rejected.concurrency"))
                       if s.get("service") else None)


def capacity_series(samples: Sequence[Sample], batch_size: int) -> Series:
    return level_series(samples, lambda s: None if _svc(s, "capacity_rps") is None
                        else _svc(s, "capacity_rps") * batch_size)


def lag(sample: Sample) -> float | None:
    ends = sample.get("end_offsets") or {}
    if not ends:
        return None
    committed = sample.get("committed") or {}
    return float(sum(end - (committed.get(p) or 0) for p, end in ends.items()))


def lag_series(samples: Sequence[Sample]) -> Series:
    return level_series(samples, lag)


def unread_series(samples: Sequence[Sample]) -> Series:
    """End offsets minus what the client has read (start committed + its events_in)."""
    first = next((s for s in samples if s.get("committed")), None)
    if first is None:
        return []
    base = sum((c or 0) for c in first["committed"].values())

    def unread(s: Sample) -> float | None:
        read = _client_counter(s, "events_in")
        ends = s.get("end_offsets") or {}
        return None if read is None or not ends else float(sum(ends.values()) - base - read)
    return level_series(samples, unread)


def rss_series_mb(samples: Sequence[Sample]) -> Series:
    return level_series(samples, lambda s: None if s.get("rss_bytes") is None else s["rss_bytes"] / 2**20)


def age_series(samples: Sequence[Sample]) -> Series:
    return level_series(samples, lambda s: s.get("oldest_uncommitted_age_s"))


def gauge_series(samples: Sequence[Sample], name: str) -> Series:
    return level_series(samples, lambda s: _client_gauge(s, name))


def latency_series(samples: Sequence[Sample], q: float) -> Series:
    return [(s["t"], p) for s in samples for p in [percentile(s.get("latencies_ms") or [], q)] if p is not None]


def rolling(series: Series, width_s: float) -> Series:
    """Mean of the points in (t - width, t] for every t (smooths 1 s quantisation)."""
    out: Series = []
    for i, (t, _) in enumerate(series):
        window = [v for (u, v) in series[: i + 1] if u > t - width_s]
        out.append((t, sum(window) / len(window)))
    return out


# ---- windows ---------------------------------------------------------------------------------

@dataclass
class Window:
    t0: float
    t1: float
    seconds: float
    goodput_eps: float | None
    attempts_rps: float | None
    r429_rps: float | None
    share_429: float | None
    amplification: float | None
    unique_events: float
    attempted_items: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_samples: int
    peak_rss_mb: float | None
    mean_in_flight: float | None
    capacity_eps: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def window(samples: Sequence[Sample], t0: float, t1: float, batch_size: int = 1) -> Window:
    """Figures over [t0, t1]: counters from the first and last sample inside it."""
    inside = [s for s in valid(samples) if t0 <= s["t"] <= t1]
    if len(inside) < 2:
        raise ValueError(f"window [{t0}, {t1}] holds fewer than two samples")
    a, b = inside[0], inside[-1]
    dt = b["t"] - a["t"]
    d = lambda key: (_svc(b, key) or 0.0) - (_svc(a, key) or 0.0)  # noqa: E731
    unique, requests, items, r429 = d("unique_txns"), d("attempted_requests"), d("attempted_items"), \
        d("rejected.rate_limit")
    latencies = [v for s in samples if a["t"] < s["t"] <= b["t"] for v in (s.get("latencies_ms") or [])]
    rss = [s["rss_bytes"] / 2**20 for s in samples if t0 <= s["t"] <= t1 and s.get("rss_bytes")]
    in_flight = [v for s in inside for v in [_client_gauge(s, "in_flight")] if v is not None]
    caps = [c * batch_size for s in inside[1:] for c in [_svc(s, "capacity_rps")] if c is not None]
    return Window(
        t0=a["t"], t1=b["t"], seconds=dt, goodput_eps=_ratio(unique, dt), attempts_rps=_ratio(requests, dt),
        r429_rps=_ratio(r429, dt), share_429=_ratio(r429, requests), amplification=_ratio(items, unique),
        unique_events=unique, attempted_items=items,
        latency_p50_ms=percentile(latencies, 50), latency_p99_ms=percentile(latencies, 99),
        latency_samples=len(latencies), peak_rss_mb=max(rss) if rss else None,
        mean_in_flight=sum(in_flight) / len(in_flight) if in_flight else None,
        capacity_eps=sum(caps) / len(caps) if caps else None)


def share_503(samples: Sequence[Sample], t0: float, t1: float) -> float | None:
    """503s (outage and concurrency rejections) / attempts over [t0, t1]."""
    inside = [s for s in valid(samples) if t0 <= s["t"] <= t1]
    if len(inside) < 2:
        return None
    a, b = inside[0], inside[-1]
    d = lambda key: (_svc(b, key) or 0.0) - (_svc(a, key) or 0.0)  # noqa: E731
    attempts = d("attempted_requests")
    return (d("rejected.outage") + d("rejected.concurrency")) / attempts if attempts else None


def client_goodput(samples: Sequence[Sample], t0: float, t1: float) -> dict[str, float]:
    """Events first accepted per client (the service's User-Agent) over [t0, t1]."""
    inside = [s for s in valid(samples) if t0 <= s["t"] <= t1]
    if len(inside) < 2:
        return {}
    first = inside[0]["service"].get("unique_by_client") or {}
    last = inside[-1]["service"].get("unique_by_client") or {}
    return {c: float(n - first.get(c, 0)) for c, n in last.items() if n - first.get(c, 0) > 0}


def jain(values: Sequence[float]) -> float | None:
    """Jain's fairness index: 1 when all are equal, 1/n when one takes everything."""
    square = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * square) if square else None


def time_until(series: Series, start: float, end: float, predicate: Callable[[float, float], bool],
               hold_s: float = 3.0) -> float | None:
    """Seconds from `start` until `predicate(t, v)` holds at every point of [t, t + hold_s]
    (or to `end`, whichever comes first), None if it never does before `end`."""
    points = [(t, v) for t, v in series if start <= t <= end]
    for i, (t, _) in enumerate(points):
        horizon = min(end, t + hold_s)
        if all(predicate(u, v) for u, v in points[i:] if u <= horizon):
            return t - start
    return None


def value_at(series: Series, t: float) -> float | None:
    """The last value at or before t (step interpolation)."""
    best = None
    for u, v in series:
        if u <= t:
            best = v
        else:
            break
    return best
