"""The control loop against a model of the service, in simulated time (no sleeps, no sockets).

Every target of issue 11 as a bound on simulated seconds and ratios, over two
seeds (`python -m testbed.sim --seeds 20` runs the long campaign), plus the
same loop against rate limiters this project did not write - a header-less
token bucket, a fixed-window counter and nginx's `limit_req` - which answer
plain 429s without `Retry-After` or `RateLimit` headers.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from testbed.sim import scenarios as sc
from testbed.sim.targets import evaluate

SEEDS = range(2)
FOREIGN = ("bucket-plain", "fixed-window", "nginx")


@pytest.fixture(scope="module")
def figures():
    return {target.name: (target, values) for target, values in evaluate(SEEDS)}


@pytest.mark.parametrize("name", [t.name for t, _ in evaluate(range(0), None)])
def test_target_holds_in_simulation(figures, name: str) -> None:
    target, values = figures[name]
    assert all(target.ok(v) for v in values), f"{name}: {values} (bound {target.bound})"


@pytest.mark.parametrize("limiter", FOREIGN)
def test_overload_through_a_foreign_limiter_keeps_goodput_and_few_rejections(limiter: str) -> None:
    result = sc.run(sc.s1(limiter), seed=0)
    assert result.window(30, 125) >= 0.95
    assert result.share_429(30, 125) <= 0.05
    assert result.amplification(30, 125) <= 1.06


@pytest.mark.parametrize("limiter", FOREIGN)
def test_a_short_drain_through_a_foreign_limiter_reaches_the_limit(limiter: str) -> None:
    result = sc.run(sc.plain_drain(limiter), seed=0)
    done = sum(w.stats.completed for w in result.workers)
    assert done == 5_000 and all(w.stats.dead_lettered == 0 for w in result.workers)
    assert done / sc.drain_seconds(result) / result.scenario.rate >= 0.9


@pytest.mark.parametrize("limiter", FOREIGN)
def test_outage_recovery_does_not_need_the_services_headers(limiter: str) -> None:
    scenario = replace(sc.s3("outage"), limiter=limiter)
    result = sc.run(scenario, seed=0)
    fault = scenario.faults[0]
    assert result.time_to(0.9, fault.end_s, scenario.duration_s) <= 5.0
    assert result.amplification(fault.start_s, scenario.duration_s) <= 1.10


def test_a_concurrency_bound_service_is_found_by_its_503s() -> None:
    """8 slots, 20 ms: ~400 req/s whatever the rate limit says; the limit must settle there."""
    scenario = sc.Scenario("concurrency-bound", 90.0, rate=2000.0, service={"max_concurrency": 8, "queue_size": 4},
                           warmup_s=20.0)
    result = sc.run(scenario, seed=0)
    assert sum(result.goodput[20:90]) / 70 >= 0.9 * 8 / 0.0202
    assert result.share_503(20, 90) <= 0.02


def test_sixteen_workers_share_a_quota_fairly_under_the_job_cap() -> None:
    result = sc.run(sc.s4(16, job_max_in_flight=64), seed=0)
    assert result.window(30, 120) >= 0.95
    assert result.share_429(30, 120) <= 0.02
    assert result.fairness(30) >= 0.95
    assert result.service.stats.peak_concurrency <= 64


def test_the_simulation_is_deterministic_per_seed() -> None:
    a, b = sc.run(sc.s3("capacity", 0.5), seed=3), sc.run(sc.s3("capacity", 0.5), seed=3)
    assert a.goodput == b.goodput and a.service.status_log == b.service.status_log
