"""The fleet quota in simulated time (issue 29): the production Lease and throttle around a model of the
coordinator, 16 and 64 workers in front of nginx's limit_req at the quota's rate."""
from __future__ import annotations

import pytest

from testbed.sim.fleet import WARMUP_S, run, scenarios

SCENARIOS = scenarios(200.0)


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    return {name: run(scenario) for name, scenario in SCENARIOS.items()}


@pytest.mark.parametrize("name", ["16 workers", "64 workers"])
def test_a_fleet_keeps_to_its_quota_fairly_without_refused_calls(results, name: str) -> None:
    r = results[name]
    assert r["share_429"] <= 0.005
    assert r["p99_window_over_quota"] <= 1.05
    assert r["together_over_quota"] >= 0.9
    assert r["jain"] >= 0.95
    assert r["coordinator_calls_per_worker_s"] <= 2


@pytest.mark.parametrize("name", ["16 without a coordinator", "64 without a coordinator"])
def test_without_a_coordinator_the_same_fleet_finds_the_limit_by_hitting_it(results, name: str) -> None:
    assert results[name]["share_429"] > 0.05


def test_workers_that_join_get_their_share_within_three_seconds_and_leavers_give_theirs_back(results) -> None:
    name = "16, 8 join at 30 s, 4 leave at 60 s"
    scenario, r = SCENARIOS[name], results[name]
    fair = 200 * 0.95 / 16                                                # 16 busy workers from 31 s to 60 s
    for wid, joined in scenario.joins.items():
        rates = r["per_worker_per_s"][wid]
        reached = next(t for t in range(int(joined), 60) if rates[t] >= 0.8 * fair)
        assert reached - joined <= 3, (wid, rates[int(joined):int(joined) + 6])
    after = r["accepted_per_s"][65:90]                                    # 12 workers share what 4 gave back
    assert sum(after) / len(after) >= 0.9 * 200
    assert r["share_429"] <= 0.005


def test_losing_the_coordinator_for_ten_seconds_stays_within_the_quota_and_recovers(results) -> None:
    r = results["16, coordinator gone 30-40 s"]
    assert r["max_window_in_gap_over_quota"] <= 1.1
    after = r["accepted_per_s"][42:60]
    assert sum(after) / len(after) >= 0.9 * 200
    assert r["share_429"] <= 0.005
    assert min(r["accepted_per_s"][WARMUP_S:]) > 0                         # it never stalled
