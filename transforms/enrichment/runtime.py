"""The per-process machinery shared by every DoFn instance and thread that calls one service.

A cap per DoFn instance would multiply with the runner's parallelism, so the
throttle, the caller and the event loop that runs every attempt live in a
process-wide registry keyed by the settings and the caller, and DoFns only
submit batches to it. Across processes the job-wide cap holds through the
shards (`JobShare`): each batch names its shard, and this process's cap is its
share of the shards. A control thread ticks the throttle every tick, so the
controllers see outages and idle spells as they happen.

The runtime also decides when the job must stop rather than dead-letter: the
service said the job is misconfigured (a status of class `stop`, a name that
does not resolve, a certificate it rejects), or the dead-letter breaker
tripped. From then on every batch ends as stopped, and `account` raises
`EnrichmentStopped` on the bundle thread, which fails the bundle before its
offsets are committed. A stopped runtime is replaced by a fresh one the next
time a DoFn asks for it (a runner's retry after the operator fixed the cause).
"""
from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from transforms.control.breaker import DeadLetterBreaker
from transforms.control.factory import build_throttle
from transforms.control.inflight import InFlightLimiter
from transforms.control.job_share import JobShare
from transforms.control.settings import ThrottleSettings
from transforms.control.signals import AttemptKind, AttemptResult, ElementFailure, timed_out
from transforms.control.throttle import Attempt, CallOutcome, Park, Sleep
from transforms.enrichment.caller import Caller
from transforms.monitoring import metrics
from transforms.monitoring.telemetry import TELEMETRY

T = TypeVar("T")


class EnrichmentStopped(RuntimeError):
    """The job must stop: `str(e)` is one line saying why (and what to fix)."""

    PREFIX = "enrichment stopped: "

    def __init__(self, why: str) -> None:
        # A runner re-raises it as `type(e)(message + context)`: the prefix is not added twice.
        super().__init__(why if why.startswith(self.PREFIX) else self.PREFIX + why)

    @property
    def why(self) -> str:
        """The reason alone, without the prefix or the runner's " [while running ...]" suffix."""
        text = str(self)[len(self.PREFIX):]
        return re.sub(r" \[while running '[^']*'\]$", "", text.splitlines()[0] if text else text)


@dataclass
class BatchResult:
    batch: list[Any]
    outcome: CallOutcome
    elapsed_s: float

    def dead_lettered(self) -> int:
        """Elements of this batch that end as dead letters."""
        if not self.outcome.ok:
            return len(self.batch)
        dead = self.__dict__.get("_dead")
        if dead is None:
            dead = self.__dict__["_dead"] = sum(isinstance(v, ElementFailure) for v in self.outcome.value)
        return dead


class Runtime(Protocol):
    """What the enrichment DoFn needs from a runtime (the seam its Beam-glue tests fill with a fake)."""

    def submit(self, batch: list[Any], shard: int) -> Future[BatchResult]:
        """Blocks while the runtime is saturated; the future completes when the batch is done.
        Raises EnrichmentStopped once the job must stop."""

    def account(self, result: BatchResult) -> None:
        """Called for every completed batch on the bundle thread: raises EnrichmentStopped when the
        batch stopped the job or tripped the dead-letter breaker."""

    def gauges(self) -> dict[str, float]:
        """Current values of the `rate_limit_rps`, `in_flight` and `in_flight_limit` gauges."""

    def take_throttled_ms(self) -> int:
        """Wall time since the previous take during which a batch waited on the throttle (`WaitTime`)."""


RuntimeFactory = Callable[[ThrottleSettings, Caller[Any], str], Runtime]

_RATE = metrics.gauge("rate_limit_rps")
_IN_FLIGHT = metrics.gauge("in_flight")
_IN_FLIGHT_LIMIT = metrics.gauge("in_flight_limit")


def set_gauges(values: dict[str, float]) -> None:
    _RATE.set(values["rate_limit_rps"])
    _IN_FLIGHT.set(values["in_flight"])
    _IN_FLIGHT_LIMIT.set(values["in_flight_limit"])


class _Slots:
    """In-flight slots for coroutines: the throttle's `InFlightLimiter`, waited for without a thread."""

    def __init__(self, limiter: InFlightLimiter) -> None:
        self._limiter = limiter
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        """A slot at once, if one is free and nobody waits before us."""
        return not self._waiters and self._limiter.try_acquire()

    async def wait(self) -> None:
        """Waits in line for a slot (cancelling the wait gives back one granted meanwhile)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter                  # set only once a slot was taken for it
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()            # granted just as it was cancelled: give the slot back
            raise

    def release(self) -> None:
        self._limiter.release()
        self.grant()

    def grant(self) -> None:
        """Hands free slots to waiters in order (also after the limit grew)."""
        while self._waiters:
            if self._waiters[0].done():   # cancelled while waiting
                self._waiters.popleft()
                continue
            if not self._limiter.try_acquire():
                return
            self._waiters.popleft().set_result(None)


class EnrichmentRuntime:
    """Throttle + caller on one event-loop thread + the control thread.

    Every batch's call runs as a coroutine on the loop, performing the
    throttle's steps (`AdaptiveThrottle.steps`) without a thread of its own.
    `submit` blocks while the throttle has no room for another batch (about
    `2 x` the current in-flight limit active, as many parked), so a slow
    service stalls the caller (and the reader behind it) instead of
    queueing batches in memory.
    """

    def __init__(self, settings: ThrottleSettings, caller: Caller[Any]) -> None:
        self.settings = settings
        self.caller = caller
        self.share = JobShare(settings.num_shards, settings.max_in_flight)
        self.throttle = build_throttle(settings, self.share.in_flight_cap())
        self.breaker = DeadLetterBreaker(settings.max_dead_letter_share, settings.breaker_window)
        self.stopped: str | None = None
        self._on_close: list[Callable[[], None]] = []
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="enrichment-loop", daemon=True)
        self._loop_thread.start()
        self._slots = _Slots(self.throttle.inflight)
        try:
            self._on_loop(caller.open())
        except BaseException:
            self._stop_loop()
            raise
        self._recovered = self._on_loop(self._new_event())
        self._seen_recoveries = 0
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._control_loop, name="enrichment-control", daemon=True)
        self._ticker.start()
        # Sampled just before each live snapshot, so the gauges are current even when nothing completes.
        self._sampler = f"enrichment-{id(self):x}"
        TELEMETRY.sampler(self._sampler, lambda: set_gauges(self.gauges()))

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @staticmethod
    async def _new_event() -> asyncio.Event:
        return asyncio.Event()

    def gauges(self) -> dict[str, float]:
        return {"rate_limit_rps": self.throttle.controller.rate, "in_flight": self.throttle.inflight.in_flight,
                "in_flight_limit": self.throttle.inflight.limit}

    def take_throttled_ms(self) -> int:
        return self.throttle.waiting.take_ms()

    def on_close(self, hook: Callable[[], None]) -> None:
        """Runs `hook` when the runtime closes (e.g. a fleet quota's lease keeper leaves)."""
        self._on_close.append(hook)

    def close(self) -> None:
        """Waits for the batches still running (each ends by its deadline), then stops the threads
        and closes the caller."""
        TELEMETRY.remove_sampler(self._sampler)
        for hook in self._on_close:
            hook()
        self._stop.set()
        self._ticker.join(timeout=5)
        self._on_loop(self._drain_and_close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        self._loop.close()

    async def _drain_and_close(self) -> None:
        while self.throttle.outstanding:
            await asyncio.sleep(0.05)
        await self.caller.close()

    def submit(self, batch: list[Any], shard: int) -> Future[BatchResult]:
        self.share.saw(shard)
        self.throttle.enter()
        if self.stopped is not None:
            self.throttle.leave()
            raise EnrichmentStopped(self.stopped)
        try:
            future = asyncio.run_coroutine_threadsafe(self._enrich(batch), self._loop)
        except BaseException:
            self.throttle.leave()
            raise
        future.add_done_callback(lambda _: self.throttle.leave())
        return future

    def account(self, result: BatchResult) -> None:
        if result.outcome.stop:
            raise EnrichmentStopped(self.stopped or result.outcome.error or "the service refused the job")
        if self.breaker.record(len(result.batch), result.dead_lettered()):
            self._halt(f"the dead-letter breaker tripped: {self.breaker.describe()}; last reason "
                       f"{result.outcome.failure or 'per-element failures'}: {result.outcome.error or ''}".rstrip(": "))
            raise EnrichmentStopped(self.stopped or "")

    def _halt(self, why: str) -> None:
        """From now on every batch ends as stopped; parked ones are woken to end now."""
        if self.stopped is None:
            self.stopped = why
            self._loop.call_soon_threadsafe(self._wake_parked)

    def _control_loop(self) -> None:
        tick_s = self.throttle.controller.tick_s
        while not self._stop.wait(tick_s):
            self.throttle.controller.set_share(self.share.fraction())
            self.throttle.concurrency.set_hard_cap(self.share.in_flight_cap())
            if self.throttle.tick():
                self._loop.call_soon_threadsafe(self._after_tick)

    def _after_tick(self) -> None:
        self._slots.grant()                          # the in-flight limit may have grown
        if self.throttle.recoveries != self._seen_recoveries:
            self._seen_recoveries = self.throttle.recoveries
            self._wake_parked()                      # an outage ended: every parked call retries now

    def _wake_parked(self) -> None:
        self._recovered.set()
        self._recovered = asyncio.Event()

    async def _enrich(self, batch: Sequence[Any]) -> BatchResult:
        started = time.monotonic()
        outcome = await self._call(batch)
        if outcome.stop:
            self._halt(outcome.error or outcome.failure or "stopped")
        return BatchResult(list(batch), outcome, time.monotonic() - started)

    async def _call(self, batch: Sequence[Any]) -> CallOutcome:
        """Performs the throttle's steps for one batch on the loop (the asyncio twin of
        `AdaptiveThrottle.call`)."""
        steps = self.throttle.steps()
        sent: Any = None
        while True:
            if self.stopped is not None:
                steps.close()
                return CallOutcome(ok=False, failure="stopped", error=self.stopped, stop=True)
            try:
                step = steps.send(sent)
            except StopIteration as done:
                outcome: CallOutcome = done.value
                return outcome
            sent = None
            if isinstance(step, Attempt):
                asked = time.monotonic()
                if not self._slots.try_take():
                    try:
                        async with within(step.deadline_in_s):
                            await self._slots.wait()
                    except asyncio.TimeoutError:
                        sent = (None, time.monotonic() - asked)     # out of time before a slot came free
                        continue
                if self.stopped is not None:
                    self._slots.release()
                    continue
                try:
                    self.throttle.started()
                    begun = time.monotonic()
                    bound = min(step.timeout_s, step.deadline_in_s - (begun - asked))
                    result = await self._attempt(batch, max(bound, 0.001))
                    sent = (result, time.monotonic() - begun)
                finally:
                    self._slots.release()
            elif isinstance(step, Park):
                recovered = self._recovered
                self.throttle.parked(+1)
                try:
                    await asyncio.wait_for(recovered.wait(), step.seconds)
                except asyncio.TimeoutError:
                    pass
                finally:
                    self.throttle.parked(-1)
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)

    async def _attempt(self, batch: Sequence[Any], timeout_s: float) -> AttemptResult:
        """One attempt, cut at `timeout_s` whatever the service is doing (a body trickling in
        byte by byte included); a caller that raises has a bug: its batch is dead-lettered."""
        try:
            async with within(timeout_s):     # cancels the call where it is, in this task
                return await self.caller.call(batch)
        except asyncio.TimeoutError:
            return timed_out()
        except Exception as exc:  # noqa: BLE001 - one batch's dead letters, not a failed bundle
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            return AttemptResult(AttemptKind.REJECTED, "caller_error", detail=detail)


def within(seconds: float) -> Any:
    """`asyncio.timeout` (Python 3.11+; async-timeout, which aiohttp brings, before): it cancels the
    awaited call in the current task, where `asyncio.wait_for` makes a task per call."""
    if sys.version_info >= (3, 11):
        return asyncio.timeout(seconds)
    import async_timeout  # Python 3.10 only
    return async_timeout.timeout(seconds)


_RUNTIMES: dict[tuple[type[EnrichmentRuntime], ThrottleSettings, str], EnrichmentRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def shared_runtime(settings: ThrottleSettings, caller: Caller[Any], key: str,
                   runtime_class: type[EnrichmentRuntime] = EnrichmentRuntime) -> EnrichmentRuntime:
    """The process-wide runtime for `settings` and the caller known as `key` (the default
    `RuntimeFactory`): one throttle per process and service. A stopped runtime is closed and
    replaced. `runtime_class` lets the benchmark's stand-ins share and close theirs the same way."""
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get((runtime_class, settings, key))
        if runtime is not None and runtime.stopped is not None:
            threading.Thread(target=runtime.close, name="enrichment-close", daemon=True).start()
            runtime = None
        if runtime is None:
            runtime = _RUNTIMES[(runtime_class, settings, key)] = runtime_class(settings, caller)
        return runtime


def close_runtimes() -> None:
    """Closes every runtime of this process (the launcher calls it when a local run ends);
    the next `shared_runtime` call starts a fresh one."""
    with _RUNTIMES_LOCK:
        runtimes = list(_RUNTIMES.values())
        _RUNTIMES.clear()
    for runtime in runtimes:
        runtime.close()
