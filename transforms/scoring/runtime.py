"""The per-process scoring machinery shared by every DoFn instance and thread.

A cap per DoFn instance would multiply with the runner's parallelism, so the
throttle, the HTTP session and the event loop that runs every request live in
a process-wide registry keyed by the configuration, and DoFns only submit
batches to it. Across processes the job-wide cap holds through the shards
(`JobShare`): each batch names its shard, and this process's cap is its share
of the shards. A control thread ticks the throttle every tick, so the
controllers see outages and idle spells as they happen.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from transforms.control.backoff import FullJitterBackoff
from transforms.control.concurrency import ConcurrencyLimit
from transforms.control.inflight import InFlightLimiter
from transforms.control.job_share import JobShare
from transforms.control.rate_controller import CubicRateController
from transforms.control.retry_budget import RetryBudget
from transforms.control.signals import AttemptResult
from transforms.control.throttle import ATTEMPT, AdaptiveThrottle, CallOutcome, Park, Sleep
from transforms.events import ParsedEvent
from transforms.monitoring import metrics
from transforms.monitoring.telemetry import TELEMETRY
from transforms.scoring.client import ScoringClient, read_token
from transforms.scoring.codec import encode_request, idempotency_key

T = TypeVar("T")


@dataclass(frozen=True)
class ScoringConfig:
    url: str
    max_in_flight: int = 32        # for the whole job: split over its shards
    num_shards: int = 8
    min_in_flight: int = 1
    in_flight_headroom: float = 2.0
    initial_rate: float = 50.0
    min_rate: float = 1.0
    max_rate: float = 10_000.0
    max_attempts: int = 30
    deadline_s: float = 300.0
    retry_budget_ratio: float = 0.1
    retry_budget_min_per_s: float = 1.0
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 10.0
    request_timeout_s: float = 10.0
    # Where the worker reads the bearer token; the token itself never enters the pipeline.
    token_env: str | None = "SCORING_TOKEN"
    token_file: str | None = None


@dataclass
class BatchResult:
    batch: list[ParsedEvent]
    outcome: CallOutcome
    elapsed_s: float


class Runtime(Protocol):
    """What the scoring DoFn needs from a runtime (the seam its Beam-glue tests fill with a fake)."""

    def submit(self, batch: list[ParsedEvent], shard: int) -> Future[BatchResult]:
        """Blocks while the runtime is saturated; the future completes when the batch is done."""

    def gauges(self) -> dict[str, float]:
        """Current values of the `rate_limit_rps`, `in_flight` and `in_flight_limit` gauges."""


RuntimeFactory = Callable[[ScoringConfig], Runtime]

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

    async def acquire(self) -> None:
        if not self._waiters and self._limiter.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter                      # set only once a slot was taken for it

    def release(self) -> None:
        self._limiter.release()
        self.grant()

    def grant(self) -> None:
        """Hands free slots to waiters in order (also after the limit grew)."""
        while self._waiters and self._limiter.try_acquire():
            self._waiters.popleft().set_result(None)


class ScoringRuntime:
    """Throttle + client on one event loop thread + the control thread.

    Every batch's call runs as a coroutine on the loop, performing the
    throttle's steps (`AdaptiveThrottle.steps`) without a thread of its own.
    `submit` blocks while the throttle has no room for another batch (about
    `2 x` the current in-flight limit active, as many parked), so a slow
    service stalls the caller (and the Kafka reader behind it) instead of
    queueing batches in memory.
    """

    def __init__(self, config: ScoringConfig) -> None:
        self.config = config
        self.share = JobShare(config.num_shards, config.max_in_flight)
        controller = CubicRateController(initial_rate=config.initial_rate, min_rate=config.min_rate,
                                         max_rate=config.max_rate)
        self.throttle = AdaptiveThrottle(
            controller, max_in_flight=config.max_in_flight,
            concurrency=ConcurrencyLimit(self.share.in_flight_cap(), floor=config.min_in_flight,
                                         headroom=config.in_flight_headroom),
            budget=RetryBudget(ratio=config.retry_budget_ratio, min_per_s=config.retry_budget_min_per_s),
            backoff=FullJitterBackoff(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s),
            max_attempts=config.max_attempts, deadline_s=config.deadline_s)
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="scoring-loop", daemon=True)
        self._loop_thread.start()
        self._slots = _Slots(self.throttle.inflight)
        token = read_token(config.token_env, config.token_file)
        self.client: ScoringClient = self._on_loop(self._make_client(token))
        self._recovered = self._on_loop(self._new_event())
        self._seen_recoveries = 0
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._control_loop, name="scoring-control", daemon=True)
        self._ticker.start()
        # Sampled just before each live snapshot, so the gauges are current even when nothing completes.
        self._sampler = f"scoring-{id(self):x}"
        TELEMETRY.sampler(self._sampler, lambda: set_gauges(self.gauges()))

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _make_client(self, token: str | None) -> ScoringClient:
        return ScoringClient(self.config.url, token=token, pool_size=self.config.max_in_flight,
                             read_timeout_s=self.config.request_timeout_s)

    @staticmethod
    async def _new_event() -> asyncio.Event:
        return asyncio.Event()

    def gauges(self) -> dict[str, float]:
        return {"rate_limit_rps": self.throttle.controller.rate, "in_flight": self.throttle.inflight.in_flight,
                "in_flight_limit": self.throttle.inflight.limit}

    def close(self) -> None:
        """Waits for the batches still running, then stops the threads and closes the HTTP session."""
        TELEMETRY.remove_sampler(self._sampler)
        self._stop.set()
        self._ticker.join(timeout=5)
        self._on_loop(self._drain_and_close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        self._loop.close()

    async def _drain_and_close(self) -> None:
        while self.throttle.outstanding:
            await asyncio.sleep(0.05)
        await self.client.close()

    def submit(self, batch: list[ParsedEvent], shard: int) -> Future[BatchResult]:
        self.share.saw(shard)
        self.throttle.enter()
        try:
            future = asyncio.run_coroutine_threadsafe(self._score(batch), self._loop)
        except BaseException:
            self.throttle.leave()
            raise
        future.add_done_callback(lambda _: self.throttle.leave())
        return future

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
            self._recovered.set()                    # an outage ended: every parked call retries now
            self._recovered = asyncio.Event()

    async def _score(self, batch: list[ParsedEvent]) -> BatchResult:
        started = time.monotonic()
        txn_ids = [p.event.txn_id for p in batch]
        body = encode_request(batch)
        key = idempotency_key(txn_ids)
        outcome = await self._call(lambda: self.client.attempt(body, txn_ids, key))
        return BatchResult(batch, outcome, time.monotonic() - started)

    async def _call(self, attempt: Callable[[], Awaitable[AttemptResult]]) -> CallOutcome:
        """Performs the throttle's steps for one batch on the loop (the asyncio twin of
        `AdaptiveThrottle.call`)."""
        steps = self.throttle.steps()
        sent: Any = None
        while True:
            try:
                step = steps.send(sent)
            except StopIteration as done:
                outcome: CallOutcome = done.value
                return outcome
            sent = None
            if step is ATTEMPT:
                await self._slots.acquire()
                try:
                    self.throttle.started()
                    begun = time.monotonic()
                    result = await attempt()
                    sent = (result, time.monotonic() - begun)
                finally:
                    self._slots.release()
            elif isinstance(step, Park):
                recovered = self._recovered
                self.throttle.parked(+1)
                try:
                    await asyncio.wait_for(recovered.wait(), step.seconds)
                except TimeoutError:
                    pass
                finally:
                    self.throttle.parked(-1)
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)


_RUNTIMES: dict[tuple[type[ScoringRuntime], ScoringConfig], ScoringRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def shared_runtime(config: ScoringConfig, runtime_class: type[ScoringRuntime] = ScoringRuntime) -> ScoringRuntime:
    """The process-wide runtime for `config` (the default `RuntimeFactory`): one throttle per process.
    `runtime_class` lets the benchmark's stand-ins share and close theirs the same way."""
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get((runtime_class, config))
        if runtime is None:
            runtime = _RUNTIMES[(runtime_class, config)] = runtime_class(config)
        return runtime


def close_runtimes() -> None:
    """Closes every runtime of this process (the launcher calls it when a local run ends);
    the next `shared_runtime` call starts a fresh one."""
    with _RUNTIMES_LOCK:
        runtimes = list(_RUNTIMES.values())
        _RUNTIMES.clear()
    for runtime in runtimes:
        runtime.close()
