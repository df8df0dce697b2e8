"""Learns the request rate the scoring service sustains (the "Limit" algorithm).

Rate first, because a 429 returns fast: a latency-based limiter sees *lower*
latency while being rejected. The rule is CUBIC on a request rate, as in the
AWS SDK's adaptive retry mode:
- before the first congestion signal, slow start doubles the rate every
  `doubling_s` (0.5 s);
- on congestion (429, 503, 504, timeout, refused connection) the rate drops to
  `beta` x the rate we were actually sending (`w_max`), at most once per
  reaction window so a burst of rejections from one window counts once;
- afterwards `rate(t) = C (t - K)^3 + w_max` with `K = cbrt(w_max (1 - beta) / C)`:
  a concave climb back to `w_max`, then a convex probe above it.
An *outage* (a congestion episode with no success for at least `outage_s`)
says nothing about capacity, only that the service was away: once
it answers again the controller slow-starts back to `beta` x the rate it had
before the outage (as TCP does after a retransmission timeout), instead of
crawling up from the floor the outage pushed it to.
The rate grows only while it is the bottleneck (the pacer handed out at least
`utilisation` of its slots); otherwise the CUBIC clock is paused, so an idle or
concurrency-bound client does not inflate its limit. An advertised
`RateLimit-Policy` caps the rate. Latency is a secondary guard: while the tick
median exceeds `latency_guard` x the baseline (the median of recent tick
medians), the rate holds instead of probing upward. It never *lowers* the
rate: on a noisy machine that made the rate ratchet down with no overload.
"""
from __future__ import annotations

import statistics
import threading
from collections import deque

from transforms.control.clock import SYSTEM_CLOCK, Clock
from transforms.control.signals import AttemptKind, AttemptResult


class CubicRateController:
    def __init__(self, initial_rate: float = 50.0, min_rate: float = 1.0, max_rate: float = 10_000.0,
                 beta: float = 0.8, c: float = 0.4, tick_s: float = 0.25, utilisation: float = 0.8,
                 latency_guard: float = 3.0, baseline_window_s: float = 30.0, outage_s: float = 1.0,
                 doubling_s: float = 0.5,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if not 0 < min_rate <= initial_rate <= max_rate:
            raise ValueError("rates need 0 < min_rate <= initial_rate <= max_rate")
        if not 0 < beta < 1:
            raise ValueError("beta must be in (0, 1)")
        self._clock = clock
        self._lock = threading.Lock()
        self.min_rate, self.max_rate = min_rate, max_rate
        self.beta, self.c, self.tick_s, self.utilisation = beta, c, tick_s, utilisation
        self.latency_guard, self.outage_s, self.doubling_s = latency_guard, outage_s, doubling_s
        self._rate = initial_rate
        self._policy_rate: float | None = None
        self._slow_start_until: float | None = float("inf")   # None = congestion avoidance
        self._w_max = initial_rate
        now = clock.now()
        self._epoch = self._last_tick = now
        self._last_sent_total = 0
        self._last_decrease = float("-inf")
        self._congested = False
        self._successes = 0
        self._last_success_tick = now
        self._episode_start: float | None = None     # first congested tick of the current episode
        self._episode_rate = initial_rate               # the rate when the episode began
        self._episode_outage = False                    # it saw a success-free gap >= outage_s
        self._latencies: list[float] = []
        self._baseline: deque[float] = deque(maxlen=max(1, int(baseline_window_s / tick_s)))
        self.decreases = 0

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def ceiling(self) -> float:
        return min(self.max_rate, self._policy_rate or self.max_rate)

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

    def tick(self, sent_total: int) -> bool:
        """Updates the rate if a tick has passed; `sent_total` = the pacer's cumulative slots.

        Returns True when it updated (the caller then pushes the rate to the pacer).
        """
        with self._lock:
            now = self._clock.now()
            dt = now - self._last_tick
            if dt < self.tick_s:
                return False
            self._last_tick = now
            sent_rate = (sent_total - self._last_sent_total) / dt
            self._last_sent_total = sent_total
            congested, self._congested = self._congested, False
            successes, self._successes = self._successes, 0
            median = statistics.median(self._latencies) if self._latencies else None
            self._latencies = []
            if successes:
                # Judged at the first success after the gap: the tick where the service comes
                # back often still carries rejections, which keep the episode open a little longer.
                if self._episode_start is not None and now - self._last_success_tick >= self.outage_s + self.tick_s:
                    self._episode_outage = True
                self._last_success_tick = now
            if congested:
                self._on_congestion(now, sent_rate)
            else:
                if self._episode_start is not None and successes:
                    self._end_episode(now)
                if median is not None and self._latency_inflated(median):
                    self._epoch += dt               # hold: neither probe nor back off
                elif sent_rate >= self.utilisation * self._rate:
                    self._grow(now, dt)
                else:
                    self._epoch += dt               # app-limited: pause the CUBIC clock
            if median is not None:
                self._baseline.append(median)

            self._rate = min(max(self._rate, self.min_rate), self.ceiling)
            return True

    def _latency_inflated(self, median: float) -> bool:
        return len(self._baseline) >= 4 and median > self.latency_guard * statistics.median(self._baseline)

    def _on_congestion(self, now: float, sent_rate: float) -> None:
        if self._episode_start is None:
            self._episode_start, self._episode_rate, self._episode_outage = now, self._rate, False
        reaction_s = max(2 * self.tick_s, 2 * statistics.median(self._baseline) if self._baseline else 0.0)
        if now - self._last_decrease < reaction_s:
            return
        self._last_decrease = now
        self._slow_start_until = None
        self._w_max = max(min(self._rate, sent_rate), self.min_rate)
        self._rate = max(self.min_rate, self._w_max * self.beta)
        self._epoch = now
        self.decreases += 1

    def _end_episode(self, now: float) -> None:
        """First tick with successes and no congestion: an outage restarts with slow start."""
        assert self._episode_start is not None
        if self._episode_outage and self._rate < self.beta * self._episode_rate:
            self._slow_start_until = self.beta * self._episode_rate
            self._w_max = self._episode_rate
        self._episode_start = None

    def _grow(self, now: float, dt: float) -> None:
        if self._slow_start_until is not None:
            self._rate *= 2 ** (dt / self.doubling_s)
            if self._rate >= self._slow_start_until:
                self._rate = min(self._rate, self._slow_start_until)
                self._slow_start_until = None
                self._epoch = now
            return
        k = (self._w_max * (1 - self.beta) / self.c) ** (1 / 3)
        target = self.c * (now - self._epoch - k) ** 3 + self._w_max
        self._rate = max(self._rate, target)
