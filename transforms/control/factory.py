"""The one place a throttle is assembled from `ThrottleSettings`: the enrichment runtime and the
simulation (`testbed/sim`) both call `build_throttle`, so the simulation runs the production wiring."""
from __future__ import annotations

import random
from typing import Any

from transforms.control.backoff import FullJitterBackoff
from transforms.control.clock import SYSTEM_CLOCK, Clock
from transforms.control.concurrency import ConcurrencyLimit
from transforms.control.rate_controller import CubicRateController
from transforms.control.retry_budget import RetryBudget
from transforms.control.settings import ThrottleSettings
from transforms.control.throttle import AdaptiveThrottle


def build_throttle(settings: ThrottleSettings, hard_cap: int, clock: Clock = SYSTEM_CLOCK,
                   rng: random.Random | None = None, controller_overrides: dict[str, Any] | None = None,
                   ) -> AdaptiveThrottle:
    """The throttle of one worker process whose share of the job's in-flight cap is `hard_cap`.
    `controller_overrides` are extra `CubicRateController` arguments (the simulation's experiments)."""
    rng = rng or random.Random()
    controller = CubicRateController(initial_rate=settings.initial_rate, min_rate=settings.min_rate,
                                     max_rate=settings.max_rate, clock=clock, **(controller_overrides or {}))
    hard_cap = max(1, hard_cap)
    return AdaptiveThrottle(
        controller,
        concurrency=ConcurrencyLimit(hard_cap, floor=min(settings.min_in_flight, hard_cap),
                                     headroom=settings.in_flight_headroom),
        budget=RetryBudget(ratio=settings.retry_budget_ratio, min_per_s=settings.retry_budget_min_per_s,
                           max_tokens=settings.retry_budget_max_tokens, clock=clock),
        backoff=FullJitterBackoff(base_s=settings.backoff_base_s, cap_s=settings.backoff_cap_s,
                                  max_retry_after_s=settings.max_retry_after_s,
                                  rng=random.Random(rng.random())),
        max_attempts=settings.max_attempts, deadline_s=settings.deadline_s,
        request_timeout_s=settings.request_timeout_s, outstanding_factor=settings.outstanding_factor,
        clock=clock, rng=rng)
