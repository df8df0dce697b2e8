"""What `make bench` runs: scenarios, their client runs and fault timelines.

Intake 100,000 events/min and a service rate of 20,000 requests/min are the
seed's numbers; `quick=True` shortens the windows and runs fewer clients in
S2/S3 and the memory pair, but never changes the rates, the batch sizes or the
targets. Every run gets fresh topics, a fresh consumer group and a fresh
scoring-service process.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

INTAKE_EPS = 100_000 / 60          # 1,667 events/s
CAPACITY_RPS = 20_000 / 60         # 333 requests/s
CLIENT_ORDER = ("ours", "naive", "pool", "beam")
# The pre-filled backlog covers what the service could possibly score in the window
# (its capacity x the batch size), so no client's drain runs dry inside it. (It was
# capped at 4,000 events/s, the pipeline's speed when the benchmark was written; once
# the pipeline drained 20,000+ events/s, S2 at batch 50 and 100 ran out of backlog
# inside the window and measured what was left of it rather than the client.)
PREFILL_MARGIN = 1.3
# Ours gets the service's concurrency (64 slots) as its job-wide cap: the adaptive limit stays far
# below it until latency rises (S3's latency x10 needs ~64 in flight to keep 333 req/s).
OURS_MAX_IN_FLIGHT = 64
S4_WORKERS = 4
S4_MAX_IN_FLIGHT = 64
S4_SHARDS = 32


@dataclass(frozen=True)
class Fault:
    kind: str                      # capacity | outage | refused | latency
    at_s: float                    # from the run's t0 (the service's first request)
    duration_s: float
    factor: float | None = None

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def label(self) -> str:
        what = {"capacity": f"capacity x{self.factor:g}", "outage": "503 outage",
                "refused": "refused connections", "latency": f"latency x{self.factor:g}"}[self.kind]
        return f"{what} {self.at_s:g}-{self.end_s:g} s"


@dataclass(frozen=True)
class Run:
    scenario: str
    client: str
    batch_size: int
    duration_s: float              # measured window, from t0
    warmup_s: float                # excluded from steady-state figures
    prefill: int                   # events produced as fast as possible before the client starts
    intake_eps: float              # paced producer during the window (0 = none)
    service: dict[str, Any] = field(default_factory=dict)
    faults: tuple[Fault, ...] = ()
    variant: str = ""              # e.g. "b10", "lag200k"
    workers: int = 1               # > 1: ours streaming on Flink with this many SDK worker processes

    @property
    def key(self) -> str:
        return "-".join(x for x in (self.scenario, self.variant, self.client) if x)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    runs: tuple[Run, ...]
    notes: str = ""


def prefill_for(batch_size: int, duration_s: float, rate_rps: float = CAPACITY_RPS) -> int:
    return int(math.ceil(PREFILL_MARGIN * rate_rps * batch_size * duration_s / 1000.0)) * 1000


def _service(**extra: Any) -> dict[str, Any]:
    return {"rate": round(CAPACITY_RPS, 3), **extra}


def s1(quick: bool) -> Scenario:
    duration, warmup = (24.0, 12.0) if quick else (125.0, 30.0)
    runs = tuple(Run("S1", c, 1, duration, warmup, prefill_for(1, duration), INTAKE_EPS, _service())
                 for c in CLIENT_ORDER)
    return Scenario("S1", "S1 overload: intake 100,000/min, capacity 20,000 req/min, 1 event per request", runs)


def s2(quick: bool) -> Scenario:
    sizes, clients, duration, warmup = ((100,), ("ours", "pool"), 12.0, 5.0) if quick else \
        ((10, 50, 100), ("ours", "pool"), 40.0, 12.0)
    runs = tuple(Run("S2", c, b, duration, warmup, prefill_for(b, duration), INTAKE_EPS, _service(),
                     variant=f"b{b}") for b in sizes for c in clients)
    return Scenario("S2", "S2 batching: same intake, up to 100 events per request "
                    "(batch 1 is S1)", runs)


def s3_faults(quick: bool) -> Scenario:
    if quick:
        timeline = (Fault("capacity", 10, 10, 0.5), Fault("outage", 30, 8), Fault("refused", 48, 8),
                    Fault("latency", 66, 10, 10.0))
        duration, clients = 86.0, ("ours",)
        title = "capacity x0.5 10 s, 503 outage 8 s, refused connections 8 s, latency x10 10 s"
    else:
        timeline = (Fault("capacity", 20, 30, 0.5), Fault("outage", 75, 20), Fault("refused", 120, 20),
                    Fault("latency", 165, 30, 10.0))
        duration, clients = 220.0, ("ours", "naive")
        title = "capacity x0.5 30 s, 503 outage 20 s, refused connections 20 s, latency x10 30 s"
    runs = tuple(Run("S3", c, 1, duration, min(15.0, timeline[0].at_s), prefill_for(1, duration), INTAKE_EPS,
                     _service(), faults=timeline, variant="faults") for c in clients)
    return Scenario("S3", f"S3 faults under S1 load: {title}", runs)


def s3_overload(quick: bool) -> Scenario:
    if quick:
        fault, duration, clients = Fault("capacity", 8, 6, 0.5), 27.0, ("ours", "naive")
    else:
        fault, duration, clients = Fault("capacity", 20, 20, 0.5), 80.0, ("ours", "naive", "pool")
    runs = tuple(Run("S3", c, 1, duration, min(fault.at_s, 15.0), prefill_for(1, duration), INTAKE_EPS,
                     _service(overload_mode=True), faults=(fault,), variant="overload") for c in clients)
    return Scenario("S3o", "S3 overload mode (a rejection costs 0.5 tokens): capacity x0.5 as the trigger", runs,
                    notes="Goodput a = (r - c*L)/(1 - c) with offered load L: above 2r nothing gets through.")


def memory(quick: bool, big: int | None = None) -> Scenario:
    """`big`: the large lag (default 200,000 quick, 1,000,000 full)."""
    default, duration = (200_000, 10.0) if quick else (1_000_000, 45.0)
    big = big or default
    runs = tuple(Run("M", "ours", 1, duration, 0.0, n, 0.0, _service(), variant=f"lag{n // 1000}k")
                 for n in (10_000, big))
    return Scenario("M", f"Memory: ours with {10_000:,} vs {big:,} events of lag (no intake during the run)",
                    runs)


def s4_workers(quick: bool) -> Scenario:
    """Several SDK worker processes (a Flink session cluster, one TaskManager and one worker per unit of
    parallelism) share one service under S1 load."""
    duration = 60.0 if quick else 120.0
    run = Run("S4", "ours", 1, duration, 30.0, prefill_for(1, duration), INTAKE_EPS, _service(),
              variant=f"w{S4_WORKERS}", workers=S4_WORKERS)
    return Scenario("S4", f"S4 {S4_WORKERS} worker processes share one service (Flink session cluster, S1 load)", (run,),
                    notes=f"job-wide --max_in_flight={S4_MAX_IN_FLIGHT} over --num_shards={S4_SHARDS}")


def all_scenarios(quick: bool, only: list[str] | None = None, memory_lag: int | None = None) -> list[Scenario]:
    scenarios = [s1(quick), s2(quick), s3_faults(quick), s3_overload(quick), s4_workers(quick),
                 memory(quick, memory_lag)]
    if only:
        scenarios = [s for s in scenarios if s.name in only]
    return scenarios
