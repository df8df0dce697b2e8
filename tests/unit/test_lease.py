"""A worker's side of the fleet quota: its demand, its ceiling, and the decay when the coordinator is gone."""
from __future__ import annotations

import pytest

from tests.unit.fake_clock import FakeClock
from tests.unit.test_control import make_throttle
from transforms.control.lease import Grant, Lease, LeaseSettings


def test_a_worker_whose_calls_wait_asks_for_the_quota_one_whose_calls_do_not_gives_it_back() -> None:
    lease = Lease(LeaseSettings(quota_rps=200))
    lease.granted(Grant(50, 4))
    assert lease.demand(started=50, waited_s=0.8, interval_s=1.0) == 200   # a backlog the ceiling holds back
    assert lease.demand(started=20, waited_s=0.0, interval_s=1.0) == 25    # used 20 rps: 20 x 1.25
    assert lease.demand(started=0, waited_s=0.0, interval_s=1.0) == 1      # idle: the minimum, not zero


def test_without_the_coordinator_the_grant_decays_to_an_equal_share_and_a_renewal_restores_it() -> None:
    clock = FakeClock()
    lease = Lease(LeaseSettings(quota_rps=200, decay_s=4.0, target_share=1.0), clock)
    lease.granted(Grant(150, 4))                  # others were idle: this worker had most of the quota
    lease.lost()
    assert lease.ceiling() == 150 and not lease.connected
    clock.advance(2.0)
    lease.lost()                                  # failing again does not restart the decay
    assert lease.ceiling() == pytest.approx(100)  # half way to 200 / 4
    clock.advance(10.0)
    assert lease.ceiling() == pytest.approx(50)   # the safe share, held for as long as it lasts
    lease.granted(Grant(80, 3))
    assert lease.ceiling() == 80 and lease.connected


def test_the_lease_caps_the_pacer_at_once_and_leaves_the_learned_rate_alone() -> None:
    throttle = make_throttle(FakeClock(), initial_rate=100)
    throttle.apply_lease(30.0)
    assert throttle.pacer.rate == 30 and throttle.controller.rate == 100
    throttle.apply_lease(0.0)
    assert throttle.pacer.rate > 0                                   # a lease of nothing never stalls the worker
    throttle.apply_lease(None)
    assert throttle.pacer.rate == 100


def test_the_fleet_aims_below_the_quota_by_its_target_share() -> None:
    assert LeaseSettings(quota_rps=200).granted_rps == pytest.approx(190)
    assert Lease(LeaseSettings(quota_rps=200, target_share=1.0)).ceiling() == 200


@pytest.mark.parametrize("settings", [dict(quota_rps=0), dict(quota_rps=10, renew_s=0), dict(quota_rps=10, ttl_s=0.5),
                                      dict(quota_rps=10, target_share=1.5)])
def test_impossible_settings_are_refused(settings) -> None:
    with pytest.raises(ValueError, match="fleet quota needs"):
        LeaseSettings(**settings)
