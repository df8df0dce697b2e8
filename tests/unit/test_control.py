"""Unit tests of the pure throttling control logic, on a fake clock (no Beam, no network)."""
from __future__ import annotations

import random
import threading
import time

import pytest

from tests.unit.fake_clock import FakeClock
from transforms.control.backoff import FullJitterBackoff
from transforms.control.batching import BatchPolicy
from transforms.control.breaker import DeadLetterBreaker
from transforms.control.concurrency import ConcurrencyLimit
from transforms.control.factory import build_throttle
from transforms.control.inflight import InFlightLimiter
from transforms.control.job_share import JobShare
from transforms.control.pacer import Pacer
from transforms.control.rate_controller import CubicRateController
from transforms.control.retry_budget import RetryBudget
from transforms.control.settings import DEFAULTS, ThrottleSettings
from transforms.control.signals import DEFAULT_STATUS, AttemptKind, AttemptResult, StatusClasses
from transforms.control.throttle import AdaptiveThrottle, Attempt

OK = AttemptResult(AttemptKind.SUCCESS, "ok", status=200)
R429 = AttemptResult(AttemptKind.RETRYABLE, "http_429", status=429, congestion=True, retry_after_s=1.0)
R503 = AttemptResult(AttemptKind.RETRYABLE, "http_503", status=503, congestion=True)
R400 = DEFAULT_STATUS.classify(400)


def cubic(**kw) -> CubicRateController:
    """The rate controller with the job's default rates unless given."""
    rates = {"initial_rate": DEFAULTS.initial_rate, "min_rate": DEFAULTS.min_rate, "max_rate": DEFAULTS.max_rate}
    return CubicRateController(**{**rates, **kw})
S401 = DEFAULT_STATUS.classify(401)


# --- pacer -----------------------------------------------------------------------------

def test_pacer_spaces_requests_at_its_rate_within_its_horizon() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, burst=1, horizon_s=0.25, clock=clock)
    waits = [pacer.reserve() for _ in range(5)]
    assert waits[:3] == pytest.approx([0.0, 0.1, 0.2])
    assert waits[3:] == [None, None]          # beyond the horizon: nothing booked, ask again later
    clock.advance(0.25)
    assert pacer.reserve() == pytest.approx(0.05)


def test_pacer_lets_a_burst_through_after_idling() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, burst=3, clock=clock)
    clock.advance(10)
    waits = [pacer.reserve() for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] > 0


def test_a_rate_change_retimes_the_next_slot_and_leaves_nothing_banked() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=1, horizon_s=0.25, clock=clock)
    assert pacer.reserve() == 0.0
    assert pacer.reserve() is None            # the next slot is 1 s away: not booked
    pacer.set_rate(100)                       # the service is back: the next slot is 10 ms after the last
    assert pacer.reserve() == pytest.approx(0.01)
    pacer.set_rate(1)                         # and a cut leaves at most one horizon booked at the old rate
    clock.advance(2)
    assert pacer.reserve() == 0.0


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


def test_inflight_limiter_try_acquire_and_recent_peak() -> None:
    limiter = InFlightLimiter(2)
    assert limiter.try_acquire() and limiter.try_acquire() and not limiter.try_acquire()
    limiter.release()
    assert limiter.take_recent_peak() == 2 and limiter.take_recent_peak() == 1
    limiter.set_limit(3)
    assert limiter.try_acquire() and limiter.try_acquire() and not limiter.try_acquire()


def test_inflight_limiter_rejects_zero() -> None:
    with pytest.raises(ValueError):
        InFlightLimiter(0)


# --- backoff ----------------------------------------------------------------------------

def test_full_jitter_stays_within_the_exponential_window() -> None:
    backoff = FullJitterBackoff(base_s=0.1, cap_s=2.0, max_retry_after_s=60, rng=random.Random(1))
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


@pytest.mark.parametrize("kwargs", [dict(max_events=0, max_bytes=100), dict(max_events=3, max_bytes=0)])
def test_batch_policy_rejects_impossible_values(kwargs) -> None:
    with pytest.raises(ValueError):
        BatchPolicy(**kwargs)


# --- rate controller (its behaviour against services is in test_control_sim.py) --------

def ticks(clock: FakeClock, controller: CubicRateController, n: int, *results: AttemptResult,
          latency: float = 0.01, send: float | None = None) -> None:
    """`n` ticks of 0.25 s, each recording `results` and having started `send` x rate x 0.25 attempts."""
    for _ in range(n):
        clock.advance(0.25)
        ticks.sent += int(controller.rate * 0.25 * (1.0 if send is None else send)) + 1
        for r in results:
            controller.record(r, latency)
        controller.tick(ticks.sent)


ticks.sent = 0


def test_controller_does_not_grow_while_app_limited() -> None:
    clock = FakeClock()
    controller = cubic(initial_rate=100, clock=clock)
    ticks(clock, controller, 100, OK, send=0.1)
    assert controller.rate == pytest.approx(100)


def test_policy_header_caps_the_rate_scaled_by_the_workers_share() -> None:
    clock = FakeClock()
    controller = cubic(initial_rate=50, clock=clock)
    policy_ok = AttemptResult(AttemptKind.SUCCESS, "ok", status=200, policy_rps=120.0)
    ticks(clock, controller, 80, policy_ok)
    assert controller.rate == pytest.approx(120)
    controller.set_share(0.25)
    ticks(clock, controller, 1, policy_ok)
    assert controller.rate == pytest.approx(30)


def test_latency_guard_holds_growth_while_latency_is_inflated() -> None:
    clock = FakeClock()
    controller = cubic(initial_rate=50, clock=clock)
    ticks(clock, controller, 8, OK, latency=0.02)
    held = controller.rate
    ticks(clock, controller, 2, OK, latency=0.5)     # 25x the baseline: hold, do not probe upward
    assert controller.rate == pytest.approx(held)
    ticks(clock, controller, 4, OK, latency=0.02)
    assert controller.rate > held                   # growth resumes once latency is back


def test_one_congestion_event_cuts_the_rate_by_a_bounded_factor() -> None:
    """A bundle boundary (nothing sent) that coincides with a 429 must not take the rate to the floor."""
    clock = FakeClock()
    controller = cubic(initial_rate=100, max_rate=100, clock=clock)
    ticks(clock, controller, 8, OK)
    ticks(clock, controller, 1, OK, R429, send=0.0)   # nothing sent, one success: a bundle boundary
    assert controller.rate == pytest.approx(64, rel=0.05)
    assert controller.decreases == 1


def test_a_cut_goes_to_beta_times_what_the_service_accepted_once_per_reaction_window() -> None:
    clock = FakeClock()
    controller = cubic(initial_rate=100, max_rate=100, beta=0.85, clock=clock)
    ticks(clock, controller, 8, OK)

    def tick_accepting(n: int) -> None:      # 25 started per tick, n accepted, one 429
        clock.advance(0.25)
        ticks.sent += 25
        for _ in range(n):
            controller.record(OK, 0.01)
        controller.record(R429, 0.001)
        controller.tick(ticks.sent)
    for _ in range(4):
        tick_accepting(22)                      # the last second: 88 accepted/s
    assert controller.decreases == 2            # one per reaction window (2 ticks), not one per tick
    assert 0.64 * 64 <= controller.rate <= 0.85 * 88   # never more than beta x the accepted rate


def test_outage_holds_the_learned_rate_probes_and_resumes_at_once() -> None:
    clock = FakeClock()
    controller = cubic(initial_rate=300, max_rate=300, probe_rate=2.0, clock=clock)
    ticks(clock, controller, 8, OK)
    ticks(clock, controller, 80, R503)               # 20 s without a success
    assert controller.in_outage
    assert controller.rate == 2.0                     # waiting batches probe, they do not hammer
    assert controller.learned_rate == pytest.approx(300)   # the cut of the first second is given back
    ticks(clock, controller, 1, OK, R503)             # back, with stragglers still failing
    assert not controller.in_outage and controller.recoveries == 1
    assert controller.rate == pytest.approx(300)


def test_an_outage_is_seen_from_the_clock_alone() -> None:
    """Ticks run without answers: a service that stops answering is an outage after `outage_s`."""
    clock = FakeClock()
    controller = cubic(initial_rate=100, max_rate=100, outage_s=1.0, clock=clock)
    ticks(clock, controller, 8, OK)
    ticks(clock, controller, 1, R503)                 # the episode opens ...
    ticks(clock, controller, 4)                       # ... then nothing comes back at all
    assert controller.in_outage


def test_latency_noise_never_ratchets_the_rate_down() -> None:
    """Jittery latency (a loaded machine) with no congestion must not lower the rate."""
    clock = FakeClock()
    controller = cubic(initial_rate=100, max_rate=100, clock=clock)
    rng = random.Random(11)
    for _ in range(400):                        # 100 s
        clock.advance(0.25)
        ticks.sent += 25
        controller.record(OK, rng.choice([0.005, 0.01, 0.2, 0.5]))
        controller.tick(ticks.sent)
    assert controller.rate == pytest.approx(100)


# --- concurrency limit and job share ---------------------------------------------------

def test_concurrency_follows_littles_law_between_floor_and_hard_cap() -> None:
    limit = ConcurrencyLimit(hard_cap=64, floor=2, headroom=2.0)
    limit.record(OK, 0.02)
    assert limit.update(rate=333, peak_in_flight=7, outage=False) == 15      # 333 x 0.02 x 2 + 1
    for _ in range(10):
        limit.record(OK, 0.2)                                                 # latency x10
        limit.update(rate=333, peak_in_flight=60, outage=False)
    assert limit.limit == 64                                                   # never above the hard cap
    limit.record(OK, 0.0001)
    for _ in range(10):
        limit.record(OK, 0.0001)
        limit.update(rate=1, peak_in_flight=1, outage=False)
    assert limit.limit == 2                                                    # nor below the floor


def test_concurrency_rejections_shrink_the_limit_and_it_creeps_back() -> None:
    limit = ConcurrencyLimit(hard_cap=64, floor=2, headroom=2.0)
    for _ in range(5):
        limit.record(OK, 0.2)
        limit.update(rate=333, peak_in_flight=64, outage=False)
    limit.record(OK, 0.2)
    limit.record(R503, 0.001)
    assert limit.update(rate=333, peak_in_flight=50, outage=False) == 40      # 0.8 x the peak
    limit.record(OK, 0.2)
    assert limit.update(rate=333, peak_in_flight=40, outage=False) == 41      # one slot per tick
    for _ in range(5):                                                         # an outage teaches nothing
        limit.record(R503, 0.001)
        assert limit.update(rate=333, peak_in_flight=41, outage=True) == 41


def test_job_share_splits_the_cap_over_the_shards_a_worker_serves() -> None:
    clock = FakeClock()
    share = JobShare(num_shards=8, job_max_in_flight=32, ttl_s=60, clock=clock)
    assert share.in_flight_cap() == 4 and share.fraction() == pytest.approx(1 / 8)
    share.saw(0)
    share.saw(3)
    assert share.in_flight_cap() == 8 and share.fraction() == pytest.approx(2 / 8)
    clock.advance(61)
    share.saw(5)
    assert share.in_flight_cap() == 4      # shards 0 and 3 moved away
    with pytest.raises(ValueError):
        JobShare(num_shards=8, job_max_in_flight=4)


# --- the throttle's retry loop ----------------------------------------------------------

def make_throttle(clock: FakeClock, *, controller: dict | None = None, seed: int = 3, **settings) -> AdaptiveThrottle:
    return build_throttle(ThrottleSettings(**{"initial_rate": 20, **settings}), hard_cap=8, clock=clock,
                          rng=random.Random(seed), controller_overrides=controller)


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


def test_a_rejected_batch_is_dead_lettered_at_once_with_the_status_as_its_reason() -> None:
    out = make_throttle(FakeClock()).call(scripted([R400, OK]))
    assert not out.ok and not out.stop and out.attempts == 1
    assert (out.failure, out.last_status) == ("http_400", 400)


def test_a_misconfiguration_status_stops_instead_of_dead_lettering() -> None:
    out = make_throttle(FakeClock()).call(scripted([R503, S401, OK]))
    assert not out.ok and out.stop and out.attempts == 2
    assert out.failure == "http_401" and "status 401 is listed under status.stop" in out.error


def test_throttle_gives_up_at_the_attempt_limit() -> None:
    clock = FakeClock()
    throttle = make_throttle(clock, max_attempts=3, retry_budget_max_tokens=100)
    out = throttle.call(lambda: R503)
    assert not out.ok and out.attempts == 3 and out.failure == "retries_exhausted"
    assert "gave up after 3 attempts" in out.error


def test_outage_attempts_stay_within_the_retry_budget() -> None:
    """60 s of 503s: every retry needs a budget token, so attempts <= first + reserve + refill."""
    clock = FakeClock()
    throttle = make_throttle(clock, max_attempts=1000, deadline_s=60, retry_budget_max_tokens=10, seed=5)
    out = throttle.call(lambda: R503)
    assert not out.ok and out.failure == "deadline" and not out.stop
    assert out.attempts <= 1 + 10 + 60 * 1.0 + 1


def test_every_attempt_is_bounded_by_the_request_timeout_and_what_is_left_of_the_deadline() -> None:
    """A slow service cannot hold a batch past its deadline: each attempt may take at most the
    request timeout, and never more than the deadline leaves; past it the batch ends as `deadline`."""
    clock = FakeClock()
    throttle = make_throttle(clock, deadline_s=25, request_timeout_s=10, retry_budget_max_tokens=100)
    start = clock.now()
    steps = throttle.steps()
    bounds = []
    sent = None
    while True:
        try:
            step = steps.send(sent)
        except StopIteration as done:
            out = done.value
            break
        sent = None
        if isinstance(step, Attempt):
            bounds.append(step.timeout_s)
            clock.advance(step.timeout_s)          # the service trickles until the bound cuts it
            sent = (AttemptResult(AttemptKind.RETRYABLE, "timeout", congestion=True), step.timeout_s)
        else:
            clock.advance(step.seconds)
    assert bounds[0] == 10 and all(b <= 10 for b in bounds) and len(bounds) >= 3
    assert sum(bounds) <= 25 + 1e-9
    assert out.failure == "deadline" and clock.now() - start <= 25 + 0.5


def test_a_batch_that_waits_out_its_deadline_for_an_in_flight_slot_ends_without_an_attempt() -> None:
    clock = FakeClock()
    steps = make_throttle(clock, deadline_s=20).steps()
    step = next(steps)
    while not isinstance(step, Attempt):
        clock.advance(step.seconds)
        step = steps.send(None)
    assert step.deadline_in_s <= 20
    clock.advance(step.deadline_in_s)
    with pytest.raises(StopIteration) as done:
        steps.send((None, step.deadline_in_s))       # no slot came free in time
    out = done.value.value
    assert (out.ok, out.attempts, out.failure) == (False, 0, "deadline") and "in-flight slot" in out.error


def test_status_classes_follow_the_http_clients_and_stop_on_anything_unclassified() -> None:
    kinds = {s: DEFAULT_STATUS.classify(s).kind for s in (400, 401, 403, 404, 405, 407, 409, 413, 418, 422,
                                                          429, 500, 501, 502, 503, 504, 302)}
    assert [s for s, k in kinds.items() if k is AttemptKind.RETRYABLE] == [429, 500, 502, 503, 504]
    assert [s for s, k in kinds.items() if k is AttemptKind.REJECTED] == [400, 413, 422]
    assert [s for s, k in kinds.items() if k is AttemptKind.STOP] == [401, 403, 404, 405, 407, 409, 418, 501, 302]
    assert [s for s in kinds if DEFAULT_STATUS.classify(s).congestion] == [429, 503, 504]
    assert "in no status class" in DEFAULT_STATUS.classify(418).detail
    custom = StatusClasses.of(reject=[400, 409], retryable=[429, 503])
    assert custom.classify(409).kind is AttemptKind.REJECTED and custom.classify(500).kind is AttemptKind.STOP


@pytest.mark.parametrize("groups, message", [
    ({"reject": [429]}, "status 429 is in both status.retryable and status.reject"),
    ({"congestion": [500, 400]}, "status.congestion: 400 must also be in status.retryable"),
    ({"stop": [99]}, "status.stop: 99 is not an HTTP status"),
    ({"success": []}, "status.success must name at least one status"),
])
def test_status_classes_refuse_contradictions(groups, message) -> None:
    with pytest.raises(ValueError, match=message):
        StatusClasses.of(**groups)


def test_the_breaker_trips_only_over_a_full_window_and_above_the_share() -> None:
    breaker = DeadLetterBreaker(max_share=0.5, window=100)
    assert not breaker.record(60, 50)             # 50 of 60, but the window is not full yet
    assert not breaker.record(40, 0)              # 50 of 100: not above half ...
    assert breaker.record(60, 60)                 # ... the oldest batch leaves: 60 of the last 100
    assert breaker.tripped and "of the last" in breaker.describe()
    healthy = DeadLetterBreaker(max_share=0.5, window=100)
    assert not any(healthy.record(20, 9) for _ in range(50))      # 45 % for ever: never trips
    assert not DeadLetterBreaker(max_share=1.0, window=10).record(100, 100)   # 1.0 turns it off


@pytest.mark.parametrize("settings, message", [
    ({"max_in_flight": 4, "num_shards": 8}, "max_in_flight \\(4\\) must be >= num_shards \\(8\\)"),
    ({"initial_rate": 0.5}, "min_rate <= initial_rate"),
    ({"max_dead_letter_share": 0}, "max_dead_letter_share must be in"),
    ({"deadline_s": float("inf")}, "deadline_s must be a finite number"),
])
def test_settings_refuse_what_cannot_work(settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        ThrottleSettings(**settings)


def test_parked_calls_wake_when_the_service_comes_back() -> None:
    """A retry parked for 8 s of backoff goes out as soon as the controller sees the outage end."""
    throttle = build_throttle(ThrottleSettings(initial_rate=100, retry_budget_max_tokens=10), hard_cap=4,
                              controller_overrides={"outage_s": 0.2, "tick_s": 0.05})
    controller = throttle.controller
    answers = iter([AttemptResult(AttemptKind.RETRYABLE, "http_503", status=503, congestion=True,
                                  retry_after_s=8.0)] + [OK] * 10)
    done = threading.Event()
    outcome: list = []

    def call() -> None:
        outcome.append(throttle.call(lambda: next(answers)))
        done.set()
    threading.Thread(target=call, daemon=True).start()
    time.sleep(0.05)
    for _ in range(20):                     # the control thread: ticks see the outage, then a success
        time.sleep(0.05)
        throttle.tick()
    controller.record(OK, 0.01)             # another batch's success ends the outage
    time.sleep(0.06)
    throttle.tick()
    assert controller.recoveries == 1
    assert done.wait(2.0), "the parked retry did not wake"
    assert outcome[0].ok and outcome[0].attempts == 2
