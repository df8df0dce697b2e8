"""Learns the request rate the scoring service sustains (the "Limit" algorithm).

Rate first, because a 429 returns fast: a latency-based limiter sees *lower*
latency while being rejected. The rule is CUBIC on a request rate, as in the
AWS SDK's adaptive retry mode, made scale-free and driven by a clock:
- `tick()` runs every `tick_s` whether or not attempts complete (the runtime's
  control thread calls it), so an outage or an idle spell is seen as it
  happens, not as one long interval when the next answer arrives;
- before the first congestion signal, slow start doubles the rate every
  `doubling_s`;
- on congestion (429, 503, 504, timeout, refused connection) the rate drops to
  `beta` x what the service accepted over the last second, at most once per
  reaction window, and never below `min_cut` x the current rate in one step: a
  bundle boundary that happens to coincide with a 429 (little sent, congestion
  flagged) must not take the rate to the floor. The accepted rate, not the
  rate sent, is the reference because it is the capacity itself whenever a
  limiter rejects the excess; a fixed-window limiter, which rejects in one
  burst per window, otherwise kept the rate 30 % above capacity;
- afterwards `rate(t) = w_max (1 + c (t - K)^3)` with `K = cbrt((1 - beta) / c)`:
  a concave climb back to `w_max` in K seconds whatever the scale, then a
  convex probe above it.
An *outage* - a congestion episode in which nothing succeeded for `outage_s` -
says nothing about capacity, only that the service is away. The controller
then stops learning, holds the rate at `probe_rate` (so waiting batches probe
the service instead of hammering it) and, at the first success, returns at
once to the rate it had when the episode began (`recoveries` counts these, so
the throttle can wake the retries parked during the outage).
The rate grows only while it is the bottleneck (the client started at least
`utilisation` of its allowed requests); otherwise the CUBIC clock is paused,
so an idle or concurrency-bound client does not inflate its limit. An
advertised `RateLimit-Policy` caps the rate, scaled by `share` (this worker's
part of the job, see `set_share`). Latency is a secondary guard: while the
tick median exceeds `latency_guard` x the baseline (the median of recent tick
medians), the rate holds instead of probing upward; it never lowers the rate.
"""
from __future__ import annotations

import statistics
import threading
from collections import deque

from transforms.control.clock import SYSTEM_CLOCK, Clock
from transforms.control.signals import AttemptKind, AttemptResult


class CubicRateController:
    def __init__(self, *, initial_rate: float, min_rate: float, max_rate: float, beta: float = 0.85,
                 c: float = 0.2, tick_s: float = 0.25, utilisation: float = 0.8,
                 latency_guard: float = 3.0, baseline_window_s: float = 30.0, outage_s: float = 1.0,
                 doubling_s: float = 0.5, min_cut: float = 0.64, probe_rate: float = 2.0,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if not 0 < min_rate <= initial_rate <= max_rate:
            raise ValueError("rates need 0 < min_rate <= initial_rate <= max_rate")
        if not 0 < beta < 1 or not 0 < min_cut <= beta:
            raise ValueError("need 0 < min_cut <= beta < 1")
        if c <= 0 or tick_s <= 0 or outage_s <= 0 or doubling_s <= 0:
            raise ValueError("c, tick_s, outage_s and doubling_s must be > 0")
        self._clock = clock
        self._lock = threading.Lock()
        self.min_rate, self.max_rate = min_rate, max_rate
        self.beta, self.c, self.tick_s, self.utilisation = beta, c, tick_s, utilisation
        self.latency_guard, self.outage_s, self.doubling_s = latency_guard, outage_s, doubling_s
        self.min_cut, self.probe_rate = min_cut, max(min_rate, probe_rate)
        self._k = ((1 - beta) / c) ** (1 / 3)
        self._rate = initial_rate
        self._policy_rate: float | None = None
        self._share = 1.0
        self._slow_start = True
        self._w_max = initial_rate
        now = clock.now()
        self._epoch = self._last_tick = now
        self._last_started = 0
        self._last_decrease = float("-inf")
        self._congested = False
        self._successes = 0
        self._last_success = now
        self._latencies: list[float] = []
        self._accepted: deque[tuple[float, int]] = deque()   # (tick time, successes) over the last second
        self._episode_start: float | None = None    # first congested tick of the current episode
        self._episode_rate = initial_rate           # the rate when the episode began
        self._outage = False
        self._baseline: deque[float] = deque(maxlen=max(1, int(baseline_window_s / tick_s)))
        self.decreases = 0
        self.recoveries = 0

    @property
    def rate(self) -> float:
        """The rate to pace at now (the probe rate during an outage)."""
        return self.probe_rate if self._outage else self._rate

    @property
    def learned_rate(self) -> float:
        """The rate the service sustained, as learned (kept through an outage)."""
        return self._rate

    @property
    def ceiling(self) -> float:
        policy = self._policy_rate * self._share if self._policy_rate else self.max_rate
        return max(self.min_rate, min(self.max_rate, policy))

    @property
    def in_outage(self) -> bool:
        return self._outage

    def set_share(self, share: float) -> None:
        """This worker's part of the job (0-1]: an advertised quota is for the whole job."""
        with self._lock:
            self._share = min(1.0, max(share, 1e-6))

    def record(self, result: AttemptResult, latency_s: float) -> None:
        """Feeds one attempt's outcome; thread-safe and cheap."""
        with self._lock:
            if result.policy_rps:
                self._policy_rate = max(self.min_rate, result.policy_rps)
            if result.congestion:
                self._congested = True
            elif result.kind is AttemptKind.SUCCESS:
                self._successes += 1
                self._latencies.append(latency_s)
                self._last_success = self._clock.now()

    def tick(self, started_total: int) -> bool:
        """Updates the rate if a tick has passed; `started_total` = attempts started so far.

        Returns True when it updated (the caller then pushes the rate to the pacer).
        """
        with self._lock:
            now = self._clock.now()
            dt = now - self._last_tick
            if dt < self.tick_s:
                return False
            self._last_tick = now
            sent_rate = (started_total - self._last_started) / dt
            self._last_started = started_total
            congested, self._congested = self._congested, False
            successes, self._successes = self._successes, 0
            median = statistics.median(self._latencies) if self._latencies else None
            self._latencies = []
            self._accepted.append((now, successes))
            while self._accepted and self._accepted[0][0] <= now - 1.0:
                self._accepted.popleft()
            if self._outage:
                if successes:
                    self._recover(now)
            elif self._silent_since_episode(now):
                self._enter_outage()
            elif congested:
                self._on_congestion(now, min(sent_rate, self._accepted_rate(now)))
            else:
                if self._episode_start is not None and successes:
                    self._episode_start = None
                if median is not None and self._latency_inflated(median):
                    self._epoch += dt               # hold: neither probe nor back off
                elif sent_rate >= self.utilisation * self._rate:
                    self._grow(now, dt)
                else:
                    self._epoch += dt               # app-limited: pause the CUBIC clock
            if median is not None:
                self._baseline.append(median)
            if not self._outage:
                self._rate = min(max(self._rate, self.min_rate), self.ceiling)
            return True

    def _accepted_rate(self, now: float) -> float:
        span = max(self.tick_s, now - self._accepted[0][0] + self.tick_s) if self._accepted else self.tick_s
        return sum(n for _, n in self._accepted) / span

    def _silent_since_episode(self, now: float) -> bool:
        return (self._episode_start is not None and self._last_success < self._episode_start
                and now - self._last_success >= self.outage_s)

    def _latency_inflated(self, median: float) -> bool:
        return len(self._baseline) >= 4 and median > self.latency_guard * statistics.median(self._baseline)

    def _on_congestion(self, now: float, accepted_rate: float) -> None:
        if self._episode_start is None:
            self._episode_start, self._episode_rate = now, self._rate
        reaction_s = max(2 * self.tick_s, 2 * statistics.median(self._baseline) if self._baseline else 0.0)
        if now - self._last_decrease < reaction_s:
            return
        self._last_decrease = now
        self._slow_start = False
        cut = max(self.beta * min(self._rate, accepted_rate), self.min_cut * self._rate, self.min_rate)
        self._rate = min(cut, self._rate)
        self._w_max = self._rate / self.beta
        self._epoch = now
        self.decreases += 1

    def _enter_outage(self) -> None:
        self._outage = True
        self._slow_start = False
        self._rate = self._episode_rate   # what the decreases of the first `outage_s` took is given back

    def _recover(self, now: float) -> None:
        """First success after an outage: resume at the pre-outage rate, on the CUBIC plateau."""
        self._outage = False
        self._episode_start = None
        self._w_max = self._rate
        self._epoch = now - self._k
        self._last_decrease = now
        self.recoveries += 1

    def _grow(self, now: float, dt: float) -> None:
        if self._slow_start:
            self._rate *= 2 ** (dt / self.doubling_s)
            return
        target = self._w_max * (1 + self.c * (now - self._epoch - self._k) ** 3)
        self._rate = max(self._rate, target)
