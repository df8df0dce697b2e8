"""Keeps a worker's lease on the fleet quota: renews it about every second on its own thread and
sets the throttle's ceiling from it, so no request waits on the coordinator."""
from __future__ import annotations

import logging
import threading
import time

from transforms.control.lease import Lease, LeaseSettings
from transforms.control.throttle import AdaptiveThrottle
from transforms.monitoring import metrics
from transforms.quota.redis_coordinator import CoordinatorUnavailable, RedisCoordinator

_LOG = logging.getLogger(__name__)
_LEASE_RPS = metrics.gauge("quota_lease_rps")
_WORKERS = metrics.gauge("quota_workers")
_FAILURES = metrics.counter("quota_coordinator_failures")


class LeaseKeeper:
    def __init__(self, coordinator: RedisCoordinator, settings: LeaseSettings, throttle: AdaptiveThrottle) -> None:
        self.coordinator, self.settings, self.throttle = coordinator, settings, throttle
        self.lease = Lease(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_started, self._last_waited = throttle.started_total, throttle.waiting.total_s()
        self._last_at = time.monotonic()

    def start(self) -> LeaseKeeper:
        """Renews once before returning (the first requests go out under a grant), then every `renew_s`.
        A starting job has a backlog: its first demand is the whole quota (it gets its fair share at
        once; an idle one gives it back at the next renewal)."""
        self.renew_once(self.settings.quota_rps)
        self._thread = threading.Thread(target=self._loop, name="fleet-quota", daemon=True)
        self._thread.start()
        return self

    def renew_once(self, demand: float | None = None) -> None:
        now, started, waited = time.monotonic(), self.throttle.started_total, self.throttle.waiting.total_s()
        if demand is None:
            demand = self.lease.demand(started - self._last_started, waited - self._last_waited, now - self._last_at)
        self._last_started, self._last_waited, self._last_at = started, waited, now
        try:
            grant = self.coordinator.renew(demand, self.settings.granted_rps, self.settings.ttl_s)
        except CoordinatorUnavailable as e:
            if self.lease.connected:
                _LOG.warning("%s; keeping the last lease, decaying to an equal share", e)
            self.lease.lost()
            _FAILURES.inc()
        else:
            if not self.lease.connected:
                _LOG.warning("quota coordinator back: %.1f rps granted, %d workers", grant.rps, grant.workers)
            self.lease.granted(grant)
            _WORKERS.set(grant.workers)
        ceiling = self.lease.ceiling()
        self.throttle.apply_lease(ceiling)
        _LEASE_RPS.set(ceiling)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.renew_s):
            try:
                self.renew_once()
            except Exception:  # noqa: BLE001 - the quota must never stop the job
                _LOG.exception("fleet quota renewal failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.coordinator.leave()
