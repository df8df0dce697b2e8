"""Every setting of the throttled call path, with its default, declared once.

The job's options, the public `ThrottledEnrichment` transform, the runtime and
the simulation all read their defaults from `ThrottleSettings`; the throttle is
built from it by one factory (`factory.build_throttle`), so what the simulation
exercises is the production wiring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ThrottleSettings:
    """How hard the job may press the service, and when it gives up on a batch or on the stream."""

    # Batches
    batch_size: int = 20                   # events per request
    max_batch_bytes: int = 256 * 1024      # bytes of events per request (an event over it travels alone)
    # Concurrency: a cap for the whole job, split over the shards of the keyed step
    num_shards: int = 8
    max_in_flight: int = 32
    min_in_flight: int = 1                 # floor of a worker's adaptive limit
    in_flight_headroom: float = 2.0        # adaptive limit = learned rate x latency x this
    outstanding_factor: int = 2            # calls admitted per in-flight slot (as many again may be parked)
    # Rate
    initial_rate: float = 50.0
    min_rate: float = 1.0
    max_rate: float = 10_000.0
    # Giving up on one batch
    max_attempts: int = 30
    deadline_s: float = 300.0              # per batch, across its attempts and waits
    request_timeout_s: float = 10.0        # per attempt, the whole exchange (not per read)
    # Retries
    retry_budget_ratio: float = 0.1        # retry tokens earned per first attempt
    retry_budget_min_per_s: float = 1.0    # tokens that trickle in without traffic
    retry_budget_max_tokens: float = 20.0
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 10.0
    max_retry_after_s: float = 60.0        # a longer Retry-After is honoured only this far
    # Giving up on the stream: more than this share of the last `breaker_window` events dead-lettered
    max_dead_letter_share: float = 0.5     # 1.0 turns the breaker off
    breaker_window: int = 1000

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """The first setting that cannot work, as one line naming it; None if all can."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return f"{f.name} must be a finite number (got {value!r})"
        positive = ("batch_size", "max_batch_bytes", "num_shards", "max_in_flight", "outstanding_factor",
                    "initial_rate", "min_rate", "max_rate", "max_attempts", "deadline_s", "request_timeout_s",
                    "backoff_base_s", "breaker_window")
        for name in positive:
            if getattr(self, name) <= 0:
                return f"{name} must be > 0 (got {getattr(self, name)})"
        if not self.min_rate <= self.initial_rate <= self.max_rate:
            return "rates must satisfy min_rate <= initial_rate <= max_rate"
        if self.max_in_flight < self.num_shards:
            return (f"max_in_flight ({self.max_in_flight}) must be >= num_shards ({self.num_shards}): "
                    "the job-wide cap is split over the shards, at least one request each")
        if not 1 <= self.min_in_flight <= self.max_in_flight // self.num_shards:
            return (f"min_in_flight ({self.min_in_flight}) must be between 1 and what one shard's worker may "
                    f"have in flight, max_in_flight // num_shards ({self.max_in_flight // self.num_shards})")
        if self.in_flight_headroom < 1:
            return f"in_flight_headroom must be >= 1 (got {self.in_flight_headroom}): below 1 the limit " \
                   "could not carry the learned rate"
        if not 0 <= self.retry_budget_ratio <= 1:
            return f"retry_budget_ratio must be in [0, 1] (got {self.retry_budget_ratio})"
        if self.retry_budget_min_per_s < 0 or self.retry_budget_max_tokens < 1:
            return "retry budget needs retry_budget_min_per_s >= 0 and retry_budget_max_tokens >= 1"
        if self.backoff_cap_s < self.backoff_base_s or self.max_retry_after_s < 0:
            return "backoff needs backoff_base_s <= backoff_cap_s and max_retry_after_s >= 0"
        if not 0 < self.max_dead_letter_share <= 1:
            return f"max_dead_letter_share must be in (0, 1] (got {self.max_dead_letter_share})"
        return None


DEFAULTS = ThrottleSettings()
