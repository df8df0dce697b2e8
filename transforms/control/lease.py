"""This worker's part of a quota shared by a fleet (issue 29): the ceiling a coordinator's lease allows.

Doorman's idea with the water-filling done by the coordinator (`transforms/quota/`): every
renewal (about once a second) reports the worker's demand and gets back its grant and how
many workers share the quota. The grant is a ceiling for the pacer; the adaptive
controller keeps learning under it, so a service whose real capacity is lower still wins,
and no request ever waits on the coordinator.

Demand: a worker that used most of its ceiling in the last interval is held back by it
(it asks for the whole quota, and water-filling gives it its fair share of what the
others leave); one that did not asks for what it used plus headroom, so an idle worker,
or one whose service answers slower than its grant, gives the rest back. When renewals fail, the last grant is kept and moves linearly to
quota / (workers last seen) over `decay_s`, the share that is safe without a coordinator:
the job never stalls and never fails for want of one.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from transforms.control.clock import SYSTEM_CLOCK, Clock

#: A worker that started at least this share of its ceiling's requests is held back by it.
HELD_BACK = 0.9


@dataclass(frozen=True)
class LeaseSettings:
    quota_rps: float
    renew_s: float = 1.0          # between renewals
    ttl_s: float = 3.0            # a worker not heard from for this long no longer counts
    decay_s: float = 3.0          # from the last grant to the safe share when the coordinator is gone
    headroom: float = 1.25        # demand of a worker that is not held back: what it used x this
    min_demand_rps: float = 1.0   # what an idle worker still asks for (its first requests go out at once)

    def __post_init__(self) -> None:
        if not self.quota_rps > 0 or not self.renew_s > 0 or self.ttl_s < self.renew_s or self.decay_s < 0:
            raise ValueError("a fleet quota needs quota_rps > 0, renew_s > 0, ttl_s >= renew_s and decay_s >= 0")


@dataclass(frozen=True)
class Grant:
    rps: float
    workers: int


class Lease:
    """The worker's side: its demand, its last grant, and the ceiling they give now."""

    def __init__(self, settings: LeaseSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings, self._clock = settings, clock
        self._lock = threading.Lock()
        # Until the first grant the worker assumes it is alone on the quota; the first renewal
        # is made before any request (`LeaseKeeper.start`), so this holds only without a coordinator.
        self._grant = Grant(settings.quota_rps, 1)
        self._lost_at: float | None = None
        self.renewals = self.failures = 0

    def demand(self, started: int, interval_s: float) -> float:
        """What to ask for, from the attempts started over the last `interval_s`: the whole quota
        when they used most of the ceiling (held back by it), else what they used plus headroom."""
        s = self.settings
        used = started / max(interval_s, 1e-9)
        if used >= HELD_BACK * self.ceiling():
            return s.quota_rps
        return min(s.quota_rps, max(s.min_demand_rps, used * s.headroom))

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
        safe = self.settings.quota_rps / max(1, grant.workers)
        decay_s = self.settings.decay_s
        done = 1.0 if decay_s == 0 else min(1.0, (self._clock.now() - lost_at) / decay_s)
        return grant.rps + (safe - grant.rps) * done
