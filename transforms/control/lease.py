"""This worker's part of a quota shared by a fleet (issue 29): the ceiling a coordinator's lease allows.

Doorman's idea, with the arithmetic done by the coordinator (`transforms/quota/`): every
renewal (about once a second) reports the worker's demand and gets back its grant
(`renewed_grant`: its max-min fair share, within what the others' grants leave free) and
how many workers share the quota. The grant is a ceiling for the pacer; the adaptive
controller keeps learning under it, so a service whose real capacity is lower still wins,
and no request ever waits on the coordinator.

Demand: a worker whose calls waited on its throttle in the last interval has a backlog
(it asks for the whole quota, and gets its fair share of what the others leave); one
whose calls did not wait asks for what it used plus headroom, so an idle worker, or one
whose service answers slower than its grant, gives the rest back. When renewals fail,
the last grant is kept and moves linearly to quota / (workers last seen) over `decay_s`,
the share that is safe without a coordinator: the job never stalls and never fails for
want of one.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from transforms.control.clock import SYSTEM_CLOCK, Clock

#: A worker whose calls waited on the throttle for more than this share of an interval is held back.
HELD_BACK = 0.1


@dataclass(frozen=True)
class LeaseSettings:
    quota_rps: float
    renew_s: float = 1.0          # between renewals
    ttl_s: float = 3.0            # a worker not heard from for this long no longer counts
    decay_s: float = 3.0          # from the last grant to the safe share when the coordinator is gone
    headroom: float = 1.25        # demand of a worker that is not held back: what it used x this
    #: The share of the quota the fleet's grants add up to: unsynchronised workers at 100 % of a
    #: limiter's rate overflow its burst now and then, and each overflow is a refused call.
    target_share: float = 0.95
    min_demand_rps: float = 1.0   # what an idle worker still asks for (its first requests go out at once)

    def __post_init__(self) -> None:
        if not self.quota_rps > 0 or not self.renew_s > 0 or self.ttl_s < self.renew_s or self.decay_s < 0 \
                or not 0 < self.target_share <= 1:
            raise ValueError("a fleet quota needs quota_rps > 0, renew_s > 0, ttl_s >= renew_s, decay_s >= 0 "
                             "and 0 < target_share <= 1")

    @property
    def granted_rps(self) -> float:
        """What the coordinator divides: the quota x `target_share`."""
        return self.quota_rps * self.target_share


@dataclass(frozen=True)
class Grant:
    rps: float
    workers: int


def water_fill(demands: dict[str, float], quota: float) -> dict[str, float]:
    """Max-min fair shares of `quota`: demands below the fair share are met in full, the rest share
    what is left equally."""
    grants, left = {}, quota
    ordered = sorted(demands.items(), key=lambda item: (item[1], item[0]))
    for i, (worker, demand) in enumerate(ordered):
        grants[worker] = min(demand, left / (len(ordered) - i))
        left -= grants[worker]
    return grants


def renewed_grant(worker: str, demands: dict[str, float], grants: dict[str, float], quota: float) -> float:
    """A renewing worker's new grant: its fair share (`water_fill` over every demand), but no more than
    the others' current grants leave free. Grants held until their holders renew keep the fleet's sum
    within the quota at every moment, even when many workers start or change at once; a shrinking
    share is given back at the holder's next renewal, and the others grow into it at theirs (from
    scratch, every grant is its fair share after three rounds). The coordinator's script does the same
    on the server (`transforms/quota/redis_coordinator.py`; a test holds the two to each other); the
    simulation uses this one."""
    fair = water_fill(demands, quota)[worker]
    free = quota - sum(g for w, g in grants.items() if w != worker)
    return max(0.0, min(fair, free))


class Lease:
    """The worker's side: its demand, its last grant, and the ceiling they give now."""

    def __init__(self, settings: LeaseSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings, self._clock = settings, clock
        self._lock = threading.Lock()
        # Until the first grant the worker assumes it is alone on the quota; the first renewal
        # is made before any request (`LeaseKeeper.start`), so this holds only without a coordinator.
        self._grant = Grant(settings.granted_rps, 1)
        self._lost_at: float | None = None
        self.renewals = self.failures = 0

    def demand(self, started: int, waited_s: float, interval_s: float) -> float:
        """What to ask for, from the last `interval_s`: the whole quota if calls waited on the
        throttle (there is a backlog the ceiling holds back), else the attempts it started per
        second plus headroom."""
        s = self.settings
        if waited_s > HELD_BACK * interval_s:
            return s.quota_rps
        return min(s.quota_rps, max(s.min_demand_rps, started / max(interval_s, 1e-9) * s.headroom))

    def granted(self, grant: Grant) -> None:
        with self._lock:
            self._grant, self._lost_at = grant, None
            self.renewals += 1

    def lost(self) -> None:
        """A renewal failed (coordinator unreachable or slow): start decaying, once."""
        with self._lock:
            if self._lost_at is None:
                self._lost_at = self._clock.now()
            self.failures += 1

    @property
    def connected(self) -> bool:
        """False from a failed renewal until the next one succeeds."""
        return self._lost_at is None

    def ceiling(self) -> float:
        with self._lock:
            grant, lost_at = self._grant, self._lost_at
        if lost_at is None:
            return grant.rps
        safe = self.settings.granted_rps / max(1, grant.workers)
        decay_s = self.settings.decay_s
        done = 1.0 if decay_s == 0 else min(1.0, (self._clock.now() - lost_at) / decay_s)
        return grant.rps + (safe - grant.rps) * done
