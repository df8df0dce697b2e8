"""The benchmark's scenarios in simulated time, and the figures the benchmark reports for them.

Same definitions as `testbed/bench/metrics.py` (goodput = events accepted for
the first time per second, as the service counts them; amplification =
event-attempts / events completed; "back to x % after restore" = until the 3 s
rolling goodput stays >= x % of capacity for 3 s), computed from the service
model's exact counts. A run takes well under a second of real time, so every
figure can be asked for over many seeds.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from testbed.sim.client import Worker, WorkerConfig
from testbed.sim.engine import Simulation
from testbed.sim.service import Fault, FixedWindow, HeaderTokenBucket, Limiter, NginxLimitReq, ServiceModel

CAPACITY_RPS = 20_000 / 60     # the seed's service
LIMITERS: dict[str, Callable[[float], Limiter]] = {
    "ours": lambda rate: HeaderTokenBucket(burst=max(1.0, rate * 0.1)),
    "bucket-plain": lambda rate: HeaderTokenBucket(burst=max(1.0, rate * 0.1), headers=False),
    "fixed-window": lambda rate: FixedWindow(1.0),
    "nginx": lambda rate: NginxLimitReq(burst=max(1.0, rate * 0.05)),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    rate: float = CAPACITY_RPS
    limiter: str = "ours"
    faults: tuple[Fault, ...] = ()
    workers: int = 1
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    job_max_in_flight: int | None = None     # split across workers (shards x depth); None = worker's own
    service: dict = field(default_factory=dict)
    warmup_s: float = 10.0


@dataclass
class Result:
    scenario: Scenario
    service: ServiceModel
    workers: list[Worker]
    goodput: list[float]            # events accepted for the first time, per second
    per_worker: list[list[float]]   # the same per worker
    capacity: list[float]           # events/s the service could take, per second

    def window(self, start_s: float, end_s: float) -> float:
        """Mean goodput / capacity over [start, end)."""
        a, b = int(start_s), int(end_s)
        cap = sum(self.capacity[a:b])
        return sum(self.goodput[a:b]) / cap if cap else 0.0

    def time_to(self, share: float, start_s: float, end_s: float, hold_s: int = 3) -> float | None:
        """Seconds from `start_s` until the 3 s rolling goodput stays >= share x capacity for hold_s."""
        roll = _rolling(self.goodput, 3)
        for t in range(int(start_s), int(end_s)):
            ok = all(roll[u] >= share * self.capacity[u] for u in range(t, min(t + hold_s, int(end_s))))
            if ok:
                return t - start_s
        return None

    def amplification(self, start_s: float, end_s: float) -> float:
        """Event-attempts / events completed over the window (from the service's exact log)."""
        attempts = sum(n for t, n in self._attempt_log if start_s <= t < end_s)
        done = sum(self.goodput[int(start_s):int(end_s)])
        return attempts / done if done else math.inf

    @property
    def _attempt_log(self) -> list[tuple[float, int]]:
        return self.service.attempt_log

    def share_429(self, start_s: float, end_s: float) -> float:
        attempts = [(t, s) for t, s in self.service.status_log if start_s <= t < end_s]
        return sum(1 for _, s in attempts if s == 429) / len(attempts) if attempts else 0.0

    def share_503(self, start_s: float, end_s: float) -> float:
        attempts = [(t, s) for t, s in self.service.status_log if start_s <= t < end_s]
        return sum(1 for _, s in attempts if s == 503) / len(attempts) if attempts else 0.0

    def fairness(self, start_s: float) -> float:
        """Jain's index over the workers' goodput from `start_s` on (1 = equal shares)."""
        totals = [sum(w[int(start_s):]) for w in self.per_worker]
        square = sum(x * x for x in totals)
        return sum(totals) ** 2 / (len(totals) * square) if square else 1.0


def _rolling(series: list[float], width: int) -> list[float]:
    return [sum(series[max(0, i - width + 1):i + 1]) / (i - max(0, i - width + 1) + 1) for i in range(len(series))]


def run(scenario: Scenario, seed: int = 0) -> Result:
    sim = Simulation()
    service = ServiceModel(sim, scenario.rate, LIMITERS[scenario.limiter](scenario.rate), faults=scenario.faults,
                           seed=seed, **scenario.service)
    n = scenario.workers
    config = scenario.worker
    if scenario.job_max_in_flight is not None:
        config = replace(config, max_in_flight=max(1, scenario.job_max_in_flight // n), share=1.0 / n)
    workers = [Worker(sim, service, i, config, seed * 1000 + i) for i in range(n)]
    for w in workers:
        w.start(scenario.duration_s)
    seconds = int(scenario.duration_s)
    capacity = []

    def sample() -> None:
        capacity.append(service.capacity(sim.now - 0.5) * config.batch_size)
    sim.every(1.0, sample, scenario.duration_s)
    sim.run(scenario.duration_s)
    goodput = [0.0] * seconds
    per_worker = [[0.0] * seconds for _ in workers]
    for t, client, events in service.stats.first_acceptances:
        if int(t) < seconds:
            goodput[int(t)] += events
            per_worker[client][int(t)] += events
    capacity = (capacity + [capacity[-1] if capacity else 0.0] * seconds)[:seconds]
    return Result(scenario, service, workers, goodput, per_worker, capacity)


# ---- the scenarios -------------------------------------------------------------------------------

def s1(limiter: str = "ours") -> Scenario:
    return Scenario(f"S1 overload ({limiter})", 125.0, limiter=limiter, warmup_s=30.0)


def s3(kind: str, factor: float = 1.0, max_in_flight: int = 64) -> Scenario:
    """One fault from 30 s, for 20 s (outage, refused) or 30 s (capacity, latency), under S1 load."""
    duration = 20.0 if kind in ("outage", "refused") else 30.0
    return Scenario(f"S3 {kind} x{factor:g}", 30.0 + duration + 30.0, faults=(Fault(kind, 30.0, duration, factor),),
                    worker=WorkerConfig(max_in_flight=max_in_flight))


def s3_overload() -> Scenario:
    return Scenario("S3o overload mode, capacity x0.5 20 s", 80.0, faults=(Fault("capacity", 20.0, 20.0, 0.5),),
                    service={"reject_cost": 0.5})


def plain_drain(limiter: str = "nginx", rate: float = 200.0, events: int = 10_000, batch: int = 2,
                max_in_flight: int = 8) -> Scenario:
    """A short drain through a limiter this project did not write (plain 429s, no headers)."""
    return Scenario(f"drain {events:,} at batch {batch} through {limiter} {rate:g} r/s", 120.0, rate=rate,
                    limiter=limiter, worker=WorkerConfig(batch_size=batch, max_in_flight=max_in_flight,
                                                         demand_batches=events // batch,
                                                         bundle_batches=2000 * 4 // batch), warmup_s=0.0)


def s4(workers: int = 4, limiter: str = "ours", job_max_in_flight: int = 32) -> Scenario:
    """Several workers share one service (Flink-sized bundles of 1,000 elements)."""
    return Scenario(f"S4 {workers} workers ({limiter})", 120.0, limiter=limiter, workers=workers,
                    job_max_in_flight=job_max_in_flight,
                    worker=WorkerConfig(bundle_batches=1000, bundle_gap_s=0.05), warmup_s=30.0)


def drain_seconds(result: Result) -> float:
    """Seconds from the first to the last first-acceptance of a drain."""
    times = [t for t, _, _ in result.service.stats.first_acceptances]
    return max(times) - min(times) if times else math.inf
