"""The control loop's targets (issue 11), each as a scenario, the figure it is judged by and its bound.

Unit tests assert these over a few seeds; `python -m testbed.sim --seeds N`
prints them over many. Bounds are in simulated seconds and ratios - never
wall-clock - so they hold on any machine.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from testbed.sim import scenarios as sc
from testbed.sim.scenarios import Result, Scenario


@dataclass(frozen=True)
class Target:
    name: str
    scenario: Scenario
    figure: Callable[[Result], float | None]
    ok: Callable[[float | None], bool]
    bound: str


def _fault(result: Result):
    return result.scenario.faults[0]


def _back_to(share: float) -> Callable[[Result], float | None]:
    return lambda r: r.time_to(share, _fault(r).end_s, r.scenario.duration_s)


def _excess_429_stop(result: Result) -> float | None:
    """Seconds from a capacity drop until the 3 s rolling 429 share stays <= 2 % to the end of the fault."""
    f = _fault(result)
    for t in range(int(f.start_s), int(f.end_s)):
        if all(result.share_429(u - 3, u) <= 0.02 for u in range(t + 1, int(f.end_s) + 1)):
            return t - f.start_s
    return None


def _at_most(bound: float) -> Callable[[float | None], bool]:
    return lambda v: v is not None and v <= bound


def _at_least(bound: float) -> Callable[[float | None], bool]:
    return lambda v: v is not None and v >= bound


def targets() -> list[Target]:
    s1 = sc.s1()
    outage, refused = sc.s3("outage"), sc.s3("refused")
    capacity, latency = sc.s3("capacity", 0.5), sc.s3("latency", 10.0)
    overload = sc.s3_overload()
    drain = sc.plain_drain("nginx")
    s4 = sc.s4(4)
    return [
        Target("S1 goodput / capacity", s1, lambda r: r.window(30, 125), _at_least(0.97), ">= 0.97"),
        Target("S1 429 share", s1, lambda r: r.share_429(30, 125), _at_most(0.01), "<= 1 %"),
        Target("S1 amplification", s1, lambda r: r.amplification(30, 125), _at_most(1.02), "<= 1.02"),
        Target("503 outage 20 s: s to 90 % after restore", outage, _back_to(0.9), _at_most(5.0), "<= 5 s"),
        Target("503 outage 20 s: amplification", outage,
               lambda r: r.amplification(_fault(r).start_s, r.scenario.duration_s), _at_most(1.10), "<= 1.10"),
        Target("refused 20 s: s to 90 % after restore", refused, _back_to(0.9), _at_most(5.0), "<= 5 s"),
        Target("refused 20 s: amplification", refused,
               lambda r: r.amplification(_fault(r).start_s, r.scenario.duration_s), _at_most(1.10), "<= 1.10"),
        Target("capacity x0.5: s until excess 429s stop", capacity, _excess_429_stop, _at_most(5.0), "<= 5 s"),
        Target("capacity x0.5: s to 90 % after restore", capacity, _back_to(0.9), _at_most(5.0), "<= 5 s"),
        Target("latency x10: goodput / capacity during", latency,
               lambda r: r.window(_fault(r).start_s + 1, _fault(r).end_s), _at_least(0.85), ">= 0.85"),
        Target("latency x10: 503 share during", latency,
               lambda r: r.share_503(_fault(r).start_s, _fault(r).end_s), _at_most(0.02), "<= 2 %"),
        Target("latency x10: service peak concurrency", latency,
               lambda r: float(r.service.stats.peak_concurrency), _at_most(64), "<= --max_in_flight (64)"),
        Target("S3o overload mode: goodput / reduced capacity", overload,
               lambda r: r.window(_fault(r).start_s + 1, _fault(r).end_s), _at_least(0.95), ">= 0.95"),
        Target("10,000-event drain via nginx 200 r/s: share of the limit", drain,
               lambda r: sum(w.stats.completed for w in r.workers) / sc.drain_seconds(r) / r.scenario.rate,
               _at_least(0.9), ">= 0.9"),
        Target("S4 4 workers: total goodput / capacity", s4, lambda r: r.window(30, 120), _at_least(0.95), ">= 0.95"),
        Target("S4 4 workers: 429 share", s4, lambda r: r.share_429(30, 120), _at_most(0.02), "<= 2 %"),
        Target("S4 4 workers: Jain fairness after 30 s", s4, lambda r: r.fairness(30), _at_least(0.95), ">= 0.95"),
        Target("S4 4 workers: job-wide peak concurrency", s4,
               lambda r: float(r.service.stats.peak_concurrency), _at_most(32), "<= job cap (32)"),
    ]


def evaluate(seeds: range, only: str | None = None,
             tune: Callable[[Scenario], Scenario] | None = None) -> list[tuple[Target, list[float | None]]]:
    """Each target's figure per seed; runs each distinct scenario once per seed."""
    chosen = [t for t in targets() if only is None or only in t.name]
    cache: dict[tuple[str, int], Result] = {}
    out = []
    for target in chosen:
        scenario = tune(target.scenario) if tune else target.scenario
        values = []
        for seed in seeds:
            key = (repr(scenario), seed)
            if key not in cache:
                cache[key] = sc.run(scenario, seed)
            values.append(target.figure(cache[key]))
        out.append((target, values))
    return out


def with_controller(**params: float) -> Callable[[Scenario], Scenario]:
    """A tuning hook for sweeps: the same scenarios with other controller parameters."""
    return lambda s: replace(s, worker=replace(s.worker, controller={**s.worker.controller, **params}))
