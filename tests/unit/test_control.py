"""Unit tests of the pure throttling control logic, on a fake clock (no Beam, no network)."""
from __future__ import annotations

import random
import threading
import time

import pytest

from tests.unit.fake_clock import FakeClock
from transforms.control.backoff import FullJitterBackoff
from transforms.control.batching import BatchPolicy
from transforms.control.inflight import InFlightLimiter
from transforms.control.pacer import Pacer
from transforms.control.rate_controller import CubicRateController
from transforms.control.retry_budget import RetryBudget
from transforms.control.signals import AttemptKind, AttemptResult
from transforms.control.throttle import AdaptiveThrottle

OK = AttemptResult(AttemptKind.SUCCESS, "ok", status=200)
R429 = AttemptResult(AttemptKind.RETRYABLE, "http_429", status=429, congestion=True, retry_after_s=1.0)
R503 = AttemptResult(AttemptKind.RETRYABLE, "http_503", status=503, congestion=True)
F400 = AttemptResult(AttemptKind.FATAL, "http_400", status=400)


class SimulatedService:
    """A token-bucket rate limit on the fake clock, like the real scoring service."""

    def __init__(self, clock: FakeClock, rate: float, burst: float = 5.0) -> None:
        self.clock, self.rate, self.burst = clock, rate, burst
        self.tokens, self.last = burst, clock.now()
        self.accepted = self.rejected = 0

    def attempt(self) -> AttemptResult:
        now = self.clock.now()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.clock.advance(0.002)  # service time
        if self.tokens >= 1:
            self.tokens -= 1
            self.accepted += 1
            return OK
        self.rejected += 1
        return R429


# --- pacer -----------------------------------------------------------------------------

def test_pacer_spaces_requests_at_its_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, burst=1, clock=clock)
    waits = [pacer.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_pacer_lets_a_burst_through_after_idling() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, burst=3, clock=clock)
    clock.advance(10)
    waits = [pacer.reserve() for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] > 0


def test_pacer_counts_slots() -> None:
    pacer = Pacer(rate=100, clock=FakeClock())
    for _ in range(7):
        pacer.acquire()
    assert pacer.sent == 7


# --- in-flight limiter ------------------------------------------------------------------

def test_inflight_limiter_never_exceeds_its_cap_across_threads() -> None:
    limiter = InFlightLimiter(4)
    seen = []

    def work() -> None:
        for _ in range(20):
            with limiter.slot():
                seen.append(limiter.in_flight)
                time.sleep(0.0005)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limiter.peak == 4
    assert max(seen) <= 4
    assert limiter.in_flight == 0


def test_inflight_limiter_rejects_zero() -> None:
    with pytest.raises(ValueError):
        InFlightLimiter(0)


# --- backoff ----------------------------------------------------------------------------

def test_full_jitter_stays_within_the_exponential_window() -> None:
    backoff = FullJitterBackoff(base_s=0.1, cap_s=2.0, rng=random.Random(1))
    for retry in range(1, 12):
        window = min(2.0, 0.1 * 2 ** (retry - 1))
        delays = [backoff.delay(retry) for _ in range(200)]
        assert all(0 <= d <= window for d in delays)
        assert max(delays) > window * 0.8  # really jittered across the window


def test_retry_after_is_a_floor_and_is_capped() -> None:
    backoff = FullJitterBackoff(base_s=0.1, cap_s=2.0, max_retry_after_s=30, rng=random.Random(2))
    assert all(backoff.delay(1, retry_after_s=3.0) >= 3.0 for _ in range(100))
    assert all(backoff.delay(1, retry_after_s=5000) <= 30 + 2.0 for _ in range(100))


# --- retry budget -----------------------------------------------------------------------

def test_budget_allows_about_ten_percent_retries_in_steady_state() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.1, min_per_s=0.0, max_tokens=5, clock=clock)
    while budget.try_withdraw():
        pass  # spend the initial reserve
    allowed = 0
    for _ in range(1000):
        budget.on_first_attempt()
        allowed += budget.try_withdraw()
    assert allowed == pytest.approx(100, abs=1)


def test_budget_reserve_refills_slowly_and_refunds_successful_retries() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_s=2.0, max_tokens=2, clock=clock)
    assert budget.try_withdraw() and budget.try_withdraw()
    assert not budget.try_withdraw()
    assert budget.seconds_until_token() == pytest.approx(0.5)
    clock.advance(0.5)
    assert budget.try_withdraw()
    budget.refund()
    assert budget.try_withdraw()


# --- batching policy --------------------------------------------------------------------

def test_batch_policy_bounds_events_and_bytes() -> None:
    policy = BatchPolicy(max_events=3, max_bytes=100)
    assert policy.fits(0, 0, 500)           # a lone oversized item still travels
    assert policy.fits(2, 60, 40)
    assert not policy.fits(2, 61, 40)        # would exceed the byte bound
    assert not policy.fits(3, 10, 1)         # would exceed the count bound
    assert policy.full(3, 10) and policy.full(1, 100) and not policy.full(2, 99)


def test_batch_policy_age_bound_only_in_streaming() -> None:
    assert not BatchPolicy().expired(0.0, 1e9)
    assert BatchPolicy(max_wait_s=2.0).expired(10.0, 12.0)
    assert not BatchPolicy(max_wait_s=2.0).expired(10.0, 11.9)


@pytest.mark.parametrize("kwargs", [dict(max_events=0), dict(max_bytes=0), dict(max_wait_s=0)])
def test_batch_policy_rejects_impossible_values(kwargs) -> None:
    with pytest.raises(ValueError):
        BatchPolicy(**kwargs)


# --- rate controller against a simulated rate limit -------------------------------------

def run_sim(clock: FakeClock, throttle: AdaptiveThrottle, service: SimulatedService, seconds: float) -> tuple[int, int]:
    """Unlimited demand paced by the throttle's learned rate for `seconds` (first attempts only;
    the retry loop is tested separately); returns (accepted, rejected) in that span."""
    a0, r0 = service.accepted, service.rejected
    end = clock.now() + seconds
    while clock.now() < end:
        throttle.pacer.acquire()
        result = service.attempt()
        throttle.controller.record(result, 0.002)
        throttle._tick()
    return service.accepted - a0, service.rejected - r0


def make_throttle(clock: FakeClock, **kw) -> AdaptiveThrottle:
    controller = CubicRateController(initial_rate=20, clock=clock, **kw)
    return AdaptiveThrottle(controller, max_in_flight=8, clock=clock, rng=random.Random(3),
                            backoff=FullJitterBackoff(rng=random.Random(4)),
                            budget=RetryBudget(clock=clock))


def test_controller_converges_near_capacity_with_few_rejections() -> None:
    clock = FakeClock()
    service = SimulatedService(clock, rate=333)
    throttle = make_throttle(clock)
    run_sim(clock, throttle, service, 30)  # warm-up: slow start and first cycles
    accepted, rejected = run_sim(clock, throttle, service, 60)
    assert accepted / 60 >= 0.9 * 333
    assert rejected / (accepted + rejected) <= 0.03


def test_controller_follows_a_capacity_drop_and_recovers_after_restore() -> None:
    clock = FakeClock()
    service = SimulatedService(clock, rate=333)
    throttle = make_throttle(clock)
    run_sim(clock, throttle, service, 30)
    service.rate = 166
    run_sim(clock, throttle, service, 10)
    accepted, rejected = run_sim(clock, throttle, service, 20)
    assert rejected / (accepted + rejected) <= 0.05   # excess rejections stopped
    assert throttle.controller.rate < 1.3 * 166
    service.rate = 333
    run_sim(clock, throttle, service, 30)
    accepted, _ = run_sim(clock, throttle, service, 10)
    assert accepted / 10 >= 0.9 * 333


def test_controller_does_not_grow_while_app_limited() -> None:
    clock = FakeClock()
    controller = CubicRateController(initial_rate=100, clock=clock)
    sent = 0
    for _ in range(100):        # 25 s at 10 req/s << 100 req/s
        clock.advance(0.25)
        sent += 2
        controller.record(OK, 0.01)
        controller.tick(sent)
    assert controller.rate == pytest.approx(100)


def test_policy_header_caps_the_rate() -> None:
    clock = FakeClock()
    controller = CubicRateController(initial_rate=50, clock=clock)
    policy_ok = AttemptResult(AttemptKind.SUCCESS, "ok", status=200, policy_rps=120.0)
    sent = 0
    for _ in range(80):
        clock.advance(0.25)
        sent += int(controller.rate * 0.25) + 1
        controller.record(policy_ok, 0.01)
        controller.tick(sent)
    assert controller.rate == pytest.approx(120)


def test_latency_guard_holds_growth_while_latency_is_inflated() -> None:
    clock = FakeClock()
    controller = CubicRateController(initial_rate=50, clock=clock)
    sent = 0

    def run(latency: float, ticks: int) -> None:
        nonlocal sent
        for _ in range(ticks):
            clock.advance(0.25)
            sent += int(controller.rate * 0.25) + 1
            controller.record(OK, latency)
            controller.tick(sent)

    run(0.02, 8)
    held = controller.rate
    run(0.5, 2)                  # 25x the baseline: hold, do not probe upward
    assert controller.rate == pytest.approx(held)
    run(0.02, 4)
    assert controller.rate > held  # growth resumes once latency is back


# --- the throttle's retry loop ----------------------------------------------------------

def scripted(results):
    it = iter(results)
    return lambda: next(it)


def test_throttle_retries_retryable_and_honours_retry_after() -> None:
    clock = FakeClock()
    throttle = make_throttle(clock)
    start = clock.now()
    out = throttle.call(scripted([R429, R503, OK]))
    assert out.ok and out.attempts == 3
    assert out.reasons == ["http_429", "http_503", "ok"]
    assert clock.now() - start >= 1.0          # the 429's Retry-After was honoured


def test_throttle_dead_letters_fatal_status_without_retrying() -> None:
    out = make_throttle(FakeClock()).call(scripted([F400, OK]))
    assert not out.ok and out.attempts == 1 and out.error == "non-retryable http_400"


def test_throttle_gives_up_at_the_attempt_limit() -> None:
    clock = FakeClock()
    controller = CubicRateController(clock=clock)
    throttle = AdaptiveThrottle(controller, max_in_flight=1, max_attempts=3, clock=clock,
                                budget=RetryBudget(max_tokens=100, clock=clock))
    out = throttle.call(lambda: R503)
    assert not out.ok and out.attempts == 3 and "gave up after 3 attempts" in out.error


def test_outage_attempts_stay_within_the_retry_budget() -> None:
    """60 s of 503s: every retry needs a budget token, so attempts <= first + reserve + refill."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.1, min_per_s=1.0, max_tokens=10, clock=clock)
    controller = CubicRateController(clock=clock)
    throttle = AdaptiveThrottle(controller, max_in_flight=4, budget=budget, max_attempts=1000,
                                deadline_s=60, clock=clock, rng=random.Random(5))
    out = throttle.call(lambda: R503)
    assert not out.ok and out.error.startswith(("retry budget exhausted", "deadline exceeded"))
    assert out.attempts <= 1 + 10 + 60 * 1.0 + 1


def test_latency_noise_never_ratchets_the_rate_down() -> None:
    """Jittery latency (a loaded machine) with no congestion must not lower the rate."""
    clock = FakeClock()
    controller = CubicRateController(initial_rate=100, max_rate=100, clock=clock)
    rng = random.Random(11)
    sent = 0
    for _ in range(400):                        # 100 s
        clock.advance(0.25)
        sent += 25
        controller.record(OK, rng.choice([0.005, 0.01, 0.2, 0.5]))
        controller.tick(sent)
    assert controller.rate == pytest.approx(100)


def test_outage_recovers_by_slow_start_to_the_previous_rate() -> None:
    clock = FakeClock()
    service = SimulatedService(clock, rate=333)
    throttle = make_throttle(clock)
    run_sim(clock, throttle, service, 30)
    before = throttle.controller.rate
    # 30 s outage: every attempt is refused, the rate falls to the floor
    end = clock.now() + 30
    while clock.now() < end:
        throttle.pacer.acquire()
        clock.advance(0.001)
        throttle.controller.record(R503, 0.001)
        throttle._tick()
    assert throttle.controller.rate <= 2
    accepted, _ = run_sim(clock, throttle, service, 10)
    assert throttle.controller.rate >= 0.75 * before      # back near the pre-outage rate ...
    accepted, _ = run_sim(clock, throttle, service, 10)
    assert accepted / 10 >= 0.9 * 333                     # ... and at capacity within 20 s


def test_outage_is_recognised_when_recovery_tick_still_carries_rejections() -> None:
    """Threads still finishing refused attempts when the service returns must not hide the outage."""
    clock = FakeClock()
    controller = CubicRateController(initial_rate=300, clock=clock)
    sent = 0

    def tick(*results) -> None:
        nonlocal sent
        clock.advance(0.25)
        sent += int(controller.rate * 0.25) + 1
        for r in results:
            controller.record(r, 0.01)
        controller.tick(sent)

    for _ in range(8):
        tick(OK)
    for _ in range(80):        # 20 s outage
        tick(R503)
    assert controller.rate <= 2
    tick(OK, R503)             # back, with stragglers
    for _ in range(16):        # 4 s
        tick(OK)
    assert controller.rate >= 0.75 * 300
