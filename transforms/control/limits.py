"""The seam between the throttle (the Limiter) and the algorithm that decides the rate (the Limit).

`AdaptiveThrottle` enforces whatever a `RateLimit` says; `CubicRateController`
learns it from the service's answers. Another algorithm - a rate leased from
a coordinator that shares one quota among many jobs, say - plugs in here
without touching how calls are paced, capped, retried or parked.
"""
from __future__ import annotations

from typing import Protocol

from transforms.control.signals import AttemptResult


class RateLimit(Protocol):
    @property
    def rate(self) -> float:
        """Requests/s to pace at now."""

    @property
    def learned_rate(self) -> float:
        """The rate the service sustains as far as the algorithm knows (sizes the in-flight limit)."""

    @property
    def in_outage(self) -> bool:
        """The service is away: nothing is being learned."""

    @property
    def tick_s(self) -> float:
        """How often `tick` wants to run."""

    recoveries: int
    """Outages seen to end; a change wakes every parked call."""

    def record(self, result: AttemptResult, latency_s: float) -> None:
        """One attempt's outcome (thread-safe, cheap)."""

    def tick(self, started_total: int) -> bool:
        """Moves the algorithm on if a tick has passed; True when it did."""

    def set_share(self, share: float) -> None:
        """This worker's part of the job (0-1], for a quota advertised to the whole job."""
