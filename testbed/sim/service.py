"""A model of a capacity-limited scoring service, in simulated time.

It mirrors the admission order of the local service (`testbed/scoring/app.py`):
outage -> rate limiter (429) -> concurrency slot with a short FIFO queue (503)
-> modelled latency while holding the slot -> 200. The rate limiter is
pluggable, because the pipeline must hold up against limiters this project did
not write: besides our token bucket with `Retry-After` and `RateLimit-Policy`,
there are a header-less token bucket, a fixed-window counter (API gateways) and
nginx's `limit_req` leaky bucket with `burst` and `nodelay` - all answering
plain 429s. Faults (capacity, latency, 503 outages, refused connections) follow
a schedule of windows in simulated seconds.
"""
from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from testbed.scoring.bucket import TokenBucket
from testbed.sim.engine import Simulation


@dataclass(frozen=True)
class Reply:
    """What the client sees: an HTTP status, or None for a refused connection."""
    status: int | None
    retry_after_s: float | None = None
    policy_rps: float | None = None


class Limiter(Protocol):
    def admit(self, now: float, rate: float) -> Reply | None:
        """None = admitted; else the rejection to send."""

    def on_rejected(self, now: float, rate: float, cost: float) -> None:
        """Overload mode: a rejection still costs the backend `cost` of a request."""


class HeaderTokenBucket:
    """The local service's limiter: token bucket, 429 + Retry-After + RateLimit-Policy."""

    def __init__(self, burst: float, headers: bool = True) -> None:
        self._bucket = TokenBucket(burst, 0.0)
        self._headers = headers

    def admit(self, now: float, rate: float) -> Reply | None:
        if self._bucket.try_take(now, rate):
            return None
        if not self._headers:
            return Reply(429)
        return Reply(429, retry_after_s=max(1, math.ceil(self._bucket.seconds_until_token(rate))), policy_rps=rate)

    def on_rejected(self, now: float, rate: float, cost: float) -> None:
        self._bucket.charge(cost, -self._bucket.burst)

    def policy(self, rate: float) -> float | None:
        return rate if self._headers else None


class FixedWindow:
    """`limit` requests per window of `window_s`, counted from window boundaries (plain 429)."""

    def __init__(self, window_s: float = 1.0) -> None:
        self._window_s = window_s
        self._window = -1
        self._count = 0.0

    def admit(self, now: float, rate: float) -> Reply | None:
        window = int(now // self._window_s)
        if window != self._window:
            self._window, self._count = window, 0.0
        if self._count + 1 <= rate * self._window_s:
            self._count += 1
            return None
        return Reply(429)

    def on_rejected(self, now: float, rate: float, cost: float) -> None:
        self._count += cost

    def policy(self, rate: float) -> float | None:
        return None


class NginxLimitReq:
    """nginx `limit_req rate=r burst=b nodelay; limit_req_status 429;`: excess leaks at r/s,
    a request is refused when the excess would pass `burst` (plain 429, no headers)."""

    def __init__(self, burst: float) -> None:
        self._burst = burst
        self._excess = 0.0
        self._last = 0.0

    def admit(self, now: float, rate: float) -> Reply | None:
        excess = max(0.0, self._excess - (now - self._last) * rate) + 1.0
        if excess > self._burst + 1.0:
            return Reply(429)
        self._excess, self._last = excess, now
        return None

    def on_rejected(self, now: float, rate: float, cost: float) -> None:
        self._excess += cost

    def policy(self, rate: float) -> float | None:
        return None


@dataclass(frozen=True)
class Fault:
    kind: str            # "capacity" | "latency" | "outage" (503 + Retry-After) | "refused"
    start_s: float
    duration_s: float
    factor: float = 1.0

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass
class ServiceStats:
    attempts: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: {"429": 0, "503_concurrency": 0, "503_outage": 0,
                                                               "refused": 0})
    attempted_items: int = 0
    peak_concurrency: int = 0
    # (time, events) of each accepted first-time request, per client id
    first_acceptances: list[tuple[float, int, int]] = field(default_factory=list)


class ServiceModel:
    def __init__(self, sim: Simulation, rate: float, limiter: Limiter, *, max_concurrency: int = 64,
                 queue_size: int = 16, queue_timeout_s: float = 0.2, latency_ms: float = 20.0,
                 per_item_ms: float = 0.2, jitter: float = 0.2, faults: tuple[Fault, ...] = (),
                 reject_cost: float | None = None, seed: int = 0) -> None:
        self._sim = sim
        self.rate = rate
        self._limiter = limiter
        self.max_concurrency, self.queue_size, self.queue_timeout_s = max_concurrency, queue_size, queue_timeout_s
        self._latency_ms, self._per_item_ms, self._jitter = latency_ms, per_item_ms, jitter
        self.faults = faults
        self._reject_cost = reject_cost
        self._rng = random.Random(seed)
        self.active = 0
        self._queue: deque[tuple[float, Callable[[bool], None]]] = deque()
        self.stats = ServiceStats()
        self._seen: set[int] = set()
        self.attempt_log: list[tuple[float, int]] = []    # (arrival, events) of every request that arrived
        self.status_log: list[tuple[float, int]] = []     # (arrival, status) once answered

    def _factor(self, kind: str, now: float) -> float:
        f = 1.0
        for fault in self.faults:
            if fault.kind == kind and fault.start_s <= now < fault.end_s:
                f *= fault.factor
        return f

    def _down(self, kind: str, now: float) -> float:
        """Seconds left of an active `kind` window (0 when none)."""
        return max((f.end_s - now for f in self.faults if f.kind == kind and f.start_s <= now < f.end_s), default=0.0)

    def capacity(self, now: float) -> float:
        return 0.0 if self._down("outage", now) or self._down("refused", now) else self.rate * self._factor(
            "capacity", now)

    def request(self, client: int, batch_id: int, events: int, reply: Callable[[Reply], None]) -> None:
        """One attempt; `reply` is called (later, in simulated time) with the outcome."""
        now = self._sim.now
        if self._down("refused", now):
            self.stats.rejected["refused"] += 1
            self._sim.after(0.001, reply, Reply(None))
            return
        self.stats.attempts += 1
        self.stats.attempted_items += events
        self.attempt_log.append((now, events))
        answer = reply

        def reply(r: Reply) -> None:
            self.status_log.append((now, r.status or 0))
            answer(r)
        outage = self._down("outage", now)
        if outage:
            self.stats.rejected["503_outage"] += 1
            self._sim.after(0.002, reply, Reply(503, retry_after_s=max(1, math.ceil(outage))))
            return
        rate = self.rate * self._factor("capacity", now)
        rejection = self._limiter.admit(now, rate)
        if rejection is not None:
            self.stats.rejected["429"] += 1
            if self._reject_cost is not None:
                self._limiter.on_rejected(now, rate, self._reject_cost)
            self._sim.after(0.002, reply, rejection)
            return
        policy = getattr(self._limiter, "policy", lambda r: None)(rate)

        def admitted(ok: bool) -> None:
            if not ok:
                self.stats.rejected["503_concurrency"] += 1
                if self._reject_cost is not None:
                    self._limiter.on_rejected(self._sim.now, rate, self._reject_cost)
                reply(Reply(503, retry_after_s=1.0))
                return
            self.stats.peak_concurrency = max(self.stats.peak_concurrency, self.active)
            self._sim.after(self._latency_s(events), self._done, client, batch_id, events, reply, policy)

        self._acquire(admitted)

    def _latency_s(self, events: int) -> float:
        base = (self._latency_ms + self._per_item_ms * events) * self._factor("latency", self._sim.now)
        return base * self._rng.uniform(1 - self._jitter, 1 + self._jitter) / 1000

    def _done(self, client: int, batch_id: int, events: int, reply: Callable[[Reply], None],
              policy: float | None) -> None:
        self._release()
        self.stats.accepted += 1
        if batch_id not in self._seen:
            self._seen.add(batch_id)
            self.stats.first_acceptances.append((self._sim.now, client, events))
        reply(Reply(200, policy_rps=policy))

    # ---- the concurrency gate (slots handed straight to the oldest waiter) --------------------

    def _acquire(self, granted: Callable[[bool], None]) -> None:
        if self.active < self.max_concurrency and not self._queue:
            self.active += 1
            granted(True)
            return
        if len(self._queue) >= self.queue_size:
            self._sim.after(0.001, granted, False)
            return
        entry = (self._sim.now + self.queue_timeout_s, granted)
        self._queue.append(entry)
        self._sim.after(self.queue_timeout_s, self._expire, entry)

    def _expire(self, entry: tuple[float, Callable[[bool], None]]) -> None:
        try:
            self._queue.remove(entry)
        except ValueError:
            return   # already granted
        entry[1](False)

    def _release(self) -> None:
        if self._queue:
            _, granted = self._queue.popleft()
            granted(True)     # the slot passes straight to the waiter
            return
        self.active -= 1
