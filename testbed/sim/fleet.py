"""A fleet of workers on one quota, in simulated time: the production `Lease` and throttle around a model of
the coordinator (the Redis script's arithmetic, `control.lease.renewed_grant`).

    python -m testbed.sim.fleet [--quota 200] [--seed 0]

Workers join and leave on a schedule, the coordinator can be down for a window, and a limiter
of the quota's rate (nginx's `limit_req` model) stands in front of a service with more capacity:
every 429 is a request the fleet sent over its quota.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field

from testbed.sim.client import Worker, WorkerConfig
from testbed.sim.engine import SimClock, Simulation
from testbed.sim.scenarios import LIMITERS
from testbed.sim.service import ServiceModel
from transforms.control.lease import Grant, Lease, LeaseSettings, renewed_grant


class SimCoordinator:
    """Demands with expiries on the coordinator's clock; no answer while it is down, empty after."""

    def __init__(self, sim: Simulation, quota_rps: float, ttl_s: float, down: tuple[float, float] | None) -> None:
        self._sim, self._quota, self._ttl, self._down = sim, quota_rps, ttl_s, down
        self._demands: dict[int, tuple[float, float]] = {}
        self._grants: dict[str, float] = {}
        self.calls = 0

    def renew(self, wid: int, demand: float) -> Grant | None:
        now = self._sim.now
        if self._down is not None and now >= self._down[0]:
            if now < self._down[1]:
                return None
            self._demands, self._grants, self._down = {}, {}, None   # restarted: its state went with it
        self.calls += 1
        self._demands[wid] = (demand, now + self._ttl)
        self._demands = {w: d for w, d in self._demands.items() if d[1] > now}
        self._grants = {w: g for w, g in self._grants.items() if int(w) in self._demands}
        demands = {str(w): d for w, (d, _) in self._demands.items()}
        grant = self._grants[str(wid)] = renewed_grant(str(wid), demands, self._grants, self._quota)
        return Grant(grant, len(demands))


@dataclass
class FleetScenario:
    workers: int = 16
    quota_rps: float = 200.0
    duration_s: float = 120.0
    joins: dict[int, float] = field(default_factory=dict)     # worker -> when it starts (default: in the first second)
    leaves: dict[int, float] = field(default_factory=dict)    # worker -> when it stops
    coordinator_down: tuple[float, float] | None = None
    lease: LeaseSettings | None = None                        # None: no coordinator, each learns alone


def run(scenario: FleetScenario, seed: int = 0) -> dict:
    sim = Simulation()
    q = scenario.quota_rps
    service = ServiceModel(sim, q, LIMITERS["nginx"](q), seed=seed)     # nginx limit_req at the quota's rate
    coordinator = (SimCoordinator(sim, scenario.lease.granted_rps, scenario.lease.ttl_s, scenario.coordinator_down)
                   if scenario.lease else None)
    workers: list[Worker] = []
    rng = random.Random(seed)
    for wid in range(scenario.workers):
        worker = Worker(sim, service, wid, WorkerConfig(batch_size=10, max_in_flight=8), seed * 1000 + wid)
        workers.append(worker)
        start = scenario.joins.get(wid, rng.random())      # processes never start in the same instant
        stop = scenario.leaves.get(wid, scenario.duration_s)
        if scenario.lease is not None and coordinator is not None:   # the first grant before the first request
            _keep_lease(sim, worker, coordinator, scenario.lease, start, stop)
        sim.at(start, worker.start, stop)
        sim.at(stop, _leave, worker)
    sim.run(scenario.duration_s)
    return _report(scenario, service, workers, coordinator)


def _leave(worker: Worker) -> None:
    worker.config.demand_batches = 0          # submits nothing more; what is outstanding completes


def _keep_lease(sim: Simulation, worker: Worker, coordinator: SimCoordinator, settings: LeaseSettings,
                start: float, stop: float) -> None:
    lease = Lease(settings, SimClock(sim))
    last = {"started": 0, "waited": 0.0}

    def renew(first: bool = False) -> None:
        started, waited = worker.throttle.started_total, worker.throttle.waiting.total_s()
        demand = settings.quota_rps if first else lease.demand(started - last["started"],
                                                               waited - last["waited"], settings.renew_s)
        last["started"], last["waited"] = started, waited
        grant = coordinator.renew(worker.wid, demand)
        if grant is None:
            lease.lost()
        else:
            lease.granted(grant)
        worker.throttle.apply_lease(lease.ceiling())

    sim.at(start, renew, True)
    sim.at(start, sim.every, settings.renew_s, renew, stop)


def _report(scenario: FleetScenario, service: ServiceModel, workers: list[Worker],
            coordinator: SimCoordinator | None) -> dict:
    seconds = int(scenario.duration_s)
    accepted = [0] * seconds
    per_worker = [[0] * seconds for _ in workers]
    for t, status in service.status_log:
        if status == 200 and int(t) < seconds:
            accepted[int(t)] += 1
    for t, client, _ in service.stats.first_acceptances:
        if int(t) < seconds:
            per_worker[client][int(t)] += 1
    refused = sum(1 for _, s in service.status_log if s == 429)
    steady = accepted[WARMUP_S:]
    ordered = sorted(steady)
    busy = [sum(w[WARMUP_S:]) for wid, w in enumerate(per_worker)
            if wid not in scenario.leaves and scenario.joins.get(wid, 0.0) < WARMUP_S]
    gap = scenario.coordinator_down
    return {
        "workers": scenario.workers, "quota_rps": scenario.quota_rps, "with_lease": scenario.lease is not None,
        "p99_window_over_quota": round(ordered[int(0.99 * (len(ordered) - 1))] / scenario.quota_rps, 3),
        "share_429": round(refused / max(1, len(service.status_log)), 4),
        "together_over_quota": round(sum(steady) / len(steady) / scenario.quota_rps, 3),
        "jain": round(sum(busy) ** 2 / (len(busy) * sum(x * x for x in busy)), 3) if busy else None,
        "max_window_in_gap_over_quota": round(max(accepted[int(gap[0]):int(gap[1])]) / scenario.quota_rps, 3)
        if gap else None,
        "coordinator_calls_per_worker_s": round(coordinator.calls / (scenario.workers * scenario.duration_s), 3)
        if coordinator else None,
        "accepted_per_s": accepted, "per_worker_per_s": per_worker,
    }


WARMUP_S = 10


def scenarios(quota_rps: float = 200.0) -> dict[str, FleetScenario]:
    """Steady fleets of 16 and 64; 16 with joins, leaves and a 10-second coordinator loss."""
    lease = LeaseSettings(quota_rps=quota_rps)
    return {
        "16 workers": FleetScenario(16, quota_rps, 60, lease=lease),
        "64 workers": FleetScenario(64, quota_rps, 60, lease=lease),
        "16, 8 join at 30 s, 4 leave at 60 s": FleetScenario(
            16, quota_rps, 90, joins={w: 30.0 + w / 10 for w in range(8, 16)}, leaves={w: 60.0 for w in range(4)},
            lease=lease),
        "16, coordinator gone 30-40 s": FleetScenario(16, quota_rps, 60, coordinator_down=(30.0, 40.0), lease=lease),
        "16 without a coordinator": FleetScenario(16, quota_rps, 60),
        "64 without a coordinator": FleetScenario(64, quota_rps, 60),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quota", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name, scenario in scenarios(args.quota).items():
        report = run(scenario, args.seed)
        print(json.dumps({"scenario": name, **{k: v for k, v in report.items() if not k.endswith("_per_s")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
