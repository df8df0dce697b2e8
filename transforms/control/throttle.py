"""Enforces the learned limits around one logical call (the "Limiter").

For each call (one batch): deposit in the retry budget, wait for a pacer slot
(rate), take an in-flight slot (concurrency), attempt, feed the controllers,
then either return, give up (a rejection, the attempt limit, the deadline),
stop (the service says the job is misconfigured) or back off with full
jitter (honouring Retry-After) and retry when the budget allows. The batch
deadline bounds the attempts too: each may take at most what is left of it.

The life of a call is written once, as `steps()`: a generator that yields what
to do next - `Sleep` (pacer), `Park` (backoff or an empty budget: a wait the
end of an outage cuts short) or `Attempt` - and receives each attempt's
result. Three drivers perform those steps: the scoring runtime as coroutines
on its event loop (`transforms/enrichment/runtime.py`), the simulation in
`testbed/sim` in simulated time, and `call()` here, blocking the calling
thread on every wait - the plain driver the unit tests use with a fake clock.
Pressure travels upstream through `enter()`: a submitter blocks there while
there is no room, so the Kafka reader stops instead of work piling up in
memory. `tick()` moves the controllers on; the runtime's control thread calls
it every tick, and `call()` also does after each attempt.

How many calls may be outstanding is decided here too (`enter`/`leave`): up to
`outstanding_factor` x the in-flight limit that are active (waiting for the
pacer or in flight), and as many again parked. Parked calls must not count
against the active ones: when a burst of 429s parks every outstanding batch on
its backoff or an empty retry budget, no first attempt could start - and first
attempts are what refill the budget - so the client stalled with its rate
unused.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from transforms.control.backoff import FullJitterBackoff
from transforms.control.clock import SYSTEM_CLOCK, Clock
from transforms.control.concurrency import ConcurrencyLimit
from transforms.control.inflight import InFlightLimiter
from transforms.control.limits import RateLimit
from transforms.control.pacer import Pacer
from transforms.control.retry_budget import RetryBudget
from transforms.control.signals import AttemptKind, AttemptResult
from transforms.control.wait_time import WaitTime

#: Under a lease of (almost) nothing a worker still sends this much: it never stalls, and the next
#: renewal (about a second later) gives it its share.
MIN_LEASE_PACE_RPS = 0.5


@dataclass
class CallOutcome:
    ok: bool
    value: Any = None
    attempts: int = 0
    reasons: list[str] = field(default_factory=list)   # one per attempt
    latencies_s: list[float] = field(default_factory=list)
    last_status: int | None = None
    failure: str | None = None                         # why it gave up, a short code (the dead letter's reason)
    error: str | None = None                           # the same as one line for people
    stop: bool = False                                 # the job is misconfigured: stop it, dead-letter nothing


@dataclass(frozen=True)
class Sleep:
    """Wait this long (a pacer slot)."""
    seconds: float


@dataclass(frozen=True)
class Park:
    """Wait up to this long; the end of an outage wakes every parked call at once."""
    seconds: float


@dataclass(frozen=True)
class Attempt:
    """Take an in-flight slot, make the attempt, release the slot; send back (result, latency_s).

    The batch's deadline is `deadline_in_s` away: waiting for the slot and the attempt together
    may not take longer, and the attempt alone at most `timeout_s` (the request timeout); the
    driver cuts the attempt there as a timeout, whatever the service is doing, and sends back
    `(None, waited_s)` if no slot came free in time (no attempt was made)."""
    timeout_s: float
    deadline_in_s: float


Step = Sleep | Park | Attempt
Steps = Generator[Step, Any, CallOutcome]


class AdaptiveThrottle:
    """Built by `factory.build_throttle` from `ThrottleSettings`, where every default lives."""

    def __init__(self, controller: RateLimit, concurrency: ConcurrencyLimit, budget: RetryBudget,
                 backoff: FullJitterBackoff, max_attempts: int, deadline_s: float, request_timeout_s: float,
                 outstanding_factor: int, burst: float = 1.0,
                 clock: Clock = SYSTEM_CLOCK, rng: random.Random | None = None) -> None:
        if max_attempts < 1 or deadline_s <= 0 or request_timeout_s <= 0:
            raise ValueError("max_attempts must be >= 1, deadline_s > 0 and request_timeout_s > 0")
        self.controller = controller
        self.concurrency = concurrency
        self.pacer = Pacer(controller.rate, burst=burst, horizon_s=controller.tick_s, clock=clock)
        self.inflight = InFlightLimiter(self.concurrency.limit)
        self.budget = budget
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.deadline_s = deadline_s
        self.request_timeout_s = request_timeout_s
        self._clock = clock
        self.waiting = WaitTime(clock)        # the union of the waits: `throttled_ms`, a fleet quota's demand
        self.lease: float | None = None       # a fleet quota's ceiling on the pacer (`apply_lease`)
        self._rng = rng or random.Random()
        self.outstanding_factor = outstanding_factor
        self._tick_lock = threading.Lock()
        self._started = 0
        self._recoveries = 0
        # One lock, two conditions: submitters wait for room, parked calls for the end of an outage
        # (one condition for both woke every parked call at every completion).
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._wake = threading.Condition(self._lock)
        self._outstanding = 0
        self._parked = 0
        self._blocked = 0                      # submitters waiting in enter()

    # ---- the life of one call ---------------------------------------------------------------

    def steps(self) -> Steps:
        clock = self._clock
        deadline = clock.now() + self.deadline_s
        out = CallOutcome(ok=False)
        failures, epoch = 0, self._recoveries   # backoff grows with failures since the last outage ended
        self.budget.on_first_attempt()
        while True:
            paid = bool(out.attempts) and out.last_status != 429
            if paid:
                # A 429 is a healthy service pacing us: the rate controller has already slowed
                # every attempt down. Retries after failures (5xx, timeouts, refused
                # connections) are what can snowball, so those spend budget.
                while not self.budget.try_withdraw():
                    # Poll often: tokens also come back from retries that succeed, which is
                    # what drains the batches parked here once a service recovers.
                    wait = min(max(self.budget.seconds_until_token(), 0.02), 0.1) * self._rng.uniform(1.0, 2.0)
                    if clock.now() + wait > deadline:
                        return _gave_up(out, "deadline", f"retry budget exhausted until the batch deadline "
                                                         f"after {out.attempts} attempts: {_last(out)}")
                    yield from self._waiting_on(Park(wait))
            while (slot := self.pacer.reserve()) is None:
                yield from self._waiting_on(Sleep(self.pacer.horizon_s))
            if slot > 0:
                yield from self._waiting_on(Sleep(slot))
            left = deadline - clock.now()
            if left <= 0:
                return _gave_up(out, "deadline", f"deadline passed after {out.attempts} attempts: {_last(out)}")
            result, latency = yield Attempt(min(self.request_timeout_s, left), left)
            if result is None:
                return _gave_up(out, "deadline", f"deadline passed waiting for an in-flight slot after "
                                                 f"{out.attempts} attempts: {_last(out)}")
            out.attempts += 1
            out.reasons.append(result.reason)
            out.latencies_s.append(latency)
            out.last_status = result.status
            self.controller.record(result, latency)
            self.concurrency.record(result, latency)
            if result.kind is AttemptKind.SUCCESS:
                if out.attempts > 1 and paid:
                    self.budget.refund()
                out.ok, out.value = True, result.value
                return out
            if result.kind is AttemptKind.STOP:
                out.stop = True
                return _gave_up(out, result.reason, _said(result))
            if result.kind is AttemptKind.REJECTED:
                return _gave_up(out, result.reason, _said(result))
            if out.attempts >= self.max_attempts:
                return _gave_up(out, "retries_exhausted", f"gave up after {out.attempts} attempts: {_said(result)}")
            if epoch != self._recoveries:
                failures, epoch = 0, self._recoveries   # failing through an outage is not this batch's fault
            failures += 1
            delay = self.backoff.delay(failures, result.retry_after_s)
            if clock.now() + delay > deadline:
                return _gave_up(out, "deadline", f"deadline exceeded after {out.attempts} attempts: {_said(result)}")
            yield from self._waiting_on(Park(delay))

    def _waiting_on(self, step: Sleep | Park) -> Generator[Step, Any, None]:
        """Yields one wait, counted in `waiting` while it lasts (however the call ends)."""
        self.waiting.begin()
        try:
            yield step
        finally:
            self.waiting.end()

    def started(self) -> None:
        """An attempt is about to go out (the driver calls this holding its in-flight slot)."""
        self._started += 1

    @property
    def started_total(self) -> int:
        """Attempts started so far (what a fleet quota's demand is measured from)."""
        return self._started

    def apply_lease(self, rps: float | None) -> None:
        """A fleet quota's ceiling on the pacer for this worker, in force at once (not at the next
        tick). The controller keeps learning below it: paced under its own rate, it counts as
        app-limited and does not grow; its rate stays the service's."""
        self.lease = rps
        self.pacer.set_rate(self._pace())

    def _pace(self) -> float:
        rate = self.controller.rate
        return rate if self.lease is None else max(MIN_LEASE_PACE_RPS, min(rate, self.lease))

    # ---- how many calls may be outstanding ------------------------------------------------------

    def _has_room(self, slack: int = 0) -> bool:
        bound = self.outstanding_factor * self.inflight.limit - slack
        return self._outstanding - self._parked < bound and self._parked < bound

    def _has_room_to_resume(self) -> bool:
        """A blocked submitter resumes once a quarter of the bound is free, not at every completion:
        waking it per completion cost a thread hand-off (and a GIL convoy) per request."""
        return self._has_room(slack=self.outstanding_factor * self.inflight.limit // 4)

    def try_enter(self) -> bool:
        """Counts a new call as outstanding if there is room for it."""
        with self._lock:
            if not self._has_room():
                return False
            self._outstanding += 1
            return True

    def enter(self) -> None:
        """Blocks until a new call may start (backpressure), then counts it as outstanding."""
        with self._room:
            if not self._has_room():
                self._blocked += 1
                try:
                    self._room.wait_for(self._has_room_to_resume)
                finally:
                    self._blocked -= 1
            self._outstanding += 1

    def leave(self) -> None:
        with self._room:
            self._outstanding -= 1
            self._maybe_resume()

    def parked(self, delta: int) -> None:
        """A call parks (+1) or leaves its park (-1); the driver reports both."""
        with self._room:
            self._parked += delta
            self._maybe_resume()

    def _maybe_resume(self) -> None:
        if self._blocked and self._has_room_to_resume():
            self._room.notify_all()

    @property
    def outstanding(self) -> int:
        return self._outstanding

    @property
    def recoveries(self) -> int:
        """Outages the controller has seen end; a change means parked calls should retry now."""
        return self._recoveries

    # ---- the controllers' clock ---------------------------------------------------------------

    def tick(self) -> bool:
        """Moves the controllers on if a tick has passed; True when it did."""
        if not self._tick_lock.acquire(blocking=False):
            return False  # another thread is updating; one update per tick is enough
        try:
            if not self.controller.tick(self._started):
                return False
            self.pacer.set_rate(self._pace())
            limit = self.concurrency.update(self.controller.learned_rate, self.inflight.take_recent_peak(),
                                            self.controller.in_outage)
            self.inflight.set_limit(limit)
            with self._lock:
                if self._recoveries != self.controller.recoveries:
                    self._recoveries = self.controller.recoveries
                    self._wake.notify_all()   # the outage is over: every parked call retries now
                self._room.notify_all()       # the limit may have grown
            return True
        finally:
            self._tick_lock.release()

    # ---- performing the steps with threads ------------------------------------------------------

    def call(self, attempt_fn: Callable[[], AttemptResult]) -> CallOutcome:
        """Runs one call to its outcome in the calling thread, blocking on every wait (the
        attempt's time bound is left to `attempt_fn`: a thread cannot be cut short)."""
        steps = self.steps()
        sent: Any = None
        while True:
            try:
                step = steps.send(sent)
            except StopIteration as done:
                outcome: CallOutcome = done.value
                return outcome
            sent = None
            if isinstance(step, Attempt):
                with self.inflight.slot():
                    self.started()
                    begun = self._clock.now()
                    result = attempt_fn()
                    sent = (result, self._clock.now() - begun)
                self.tick()
            elif isinstance(step, Park):
                self._park(step.seconds)
            elif isinstance(step, Sleep):
                self._clock.sleep(step.seconds)

    def _park(self, seconds: float) -> None:
        with self._lock:
            self._parked += 1
            self._maybe_resume()
            seen = self._recoveries
            self._clock.wait(self._wake, lambda: self._recoveries != seen, seconds)
            self._parked -= 1
            self._maybe_resume()


def _said(result: AttemptResult) -> str:
    return f"{result.reason}: {result.detail}" if result.detail else result.reason


def _last(out: CallOutcome) -> str:
    return out.reasons[-1] if out.reasons else "no attempt"


def _gave_up(out: CallOutcome, failure: str, error: str) -> CallOutcome:
    out.failure, out.error = failure, error
    return out
