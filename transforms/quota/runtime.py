"""The enrichment runtime with a fleet quota: the process's shared runtime, plus one lease keeper
on its throttle (started with it, leaving the quota when it closes)."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from transforms.control.lease import LeaseSettings
from transforms.control.settings import ThrottleSettings
from transforms.enrichment.caller import Caller
from transforms.enrichment.runtime import EnrichmentRuntime, shared_runtime
from transforms.quota.keeper import LeaseKeeper
from transforms.quota.redis_coordinator import QuotaCoordinatorConfig, RedisCoordinator


@dataclass(frozen=True)
class FleetQuota:
    coordinator: QuotaCoordinatorConfig
    lease: LeaseSettings


_KEEPERS: dict[int, LeaseKeeper] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class WithFleetQuota:
    """A `RuntimeFactory` (see `ThrottledEnrichment.with_runtime_factory`); picklable."""
    quota: FleetQuota

    def __call__(self, settings: ThrottleSettings, caller: Caller[Any], key: str) -> EnrichmentRuntime:
        runtime = shared_runtime(settings, caller, key)
        with _LOCK:
            if id(runtime) not in _KEEPERS:
                keeper = LeaseKeeper(RedisCoordinator(self.quota.coordinator), self.quota.lease, runtime.throttle)
                _KEEPERS[id(runtime)] = keeper.start()
                runtime.on_close(lambda: _forget(id(runtime)))
        return runtime


def _forget(runtime_id: int) -> None:
    with _LOCK:
        keeper = _KEEPERS.pop(runtime_id, None)
    if keeper is not None:
        keeper.stop()
