"""The per-process scoring machinery shared by every DoFn instance and thread.

A cap per DoFn instance would multiply with the runner's parallelism, so the
throttle, the HTTP session and the worker threads live in a process-wide
registry keyed by the configuration, and DoFns only submit batches to it.
Across processes the job-wide cap holds through the shards (`JobShare`): each
batch names its shard, and this process may have `depth` requests in flight
per shard it serves. A control thread ticks the throttle every tick, so the
controllers see outages and idle spells as they happen.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from transforms.control.backoff import FullJitterBackoff
from transforms.control.concurrency import ConcurrencyLimit
from transforms.control.job_share import JobShare
from transforms.control.rate_controller import CubicRateController
from transforms.control.retry_budget import RetryBudget
from transforms.control.throttle import AdaptiveThrottle, CallOutcome
from transforms.events import ParsedEvent
from transforms.monitoring import metrics
from transforms.monitoring.telemetry import TELEMETRY
from transforms.scoring.client import ScoringClient, read_token
from transforms.scoring.codec import encode_request, idempotency_key


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


class ScoringRuntime:
    """Throttle + client + worker threads + the control thread.

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
        self.client = ScoringClient(config.url, token=read_token(config.token_env, config.token_file),
                                    pool_size=config.max_in_flight, read_timeout_s=config.request_timeout_s)
        self._pool = ThreadPoolExecutor(4 * config.max_in_flight, thread_name_prefix="scoring")
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._control_loop, name="scoring-control", daemon=True)
        self._ticker.start()
        # Sampled just before each live snapshot, so the gauges are current even when nothing completes.
        self._sampler = f"scoring-{id(self):x}"
        TELEMETRY.sampler(self._sampler, lambda: set_gauges(self.gauges()))

    def gauges(self) -> dict[str, float]:
        return {"rate_limit_rps": self.throttle.controller.rate, "in_flight": self.throttle.inflight.in_flight,
                "in_flight_limit": self.throttle.inflight.limit}

    def close(self) -> None:
        """Waits for the batches still running, then releases the threads and the HTTP session."""
        TELEMETRY.remove_sampler(self._sampler)
        self._stop.set()
        self._pool.shutdown(wait=True)
        self._ticker.join(timeout=5)
        self.client.close()

    def submit(self, batch: list[ParsedEvent], shard: int) -> Future[BatchResult]:
        self.share.saw(shard)
        self.throttle.enter()
        try:
            future = self._pool.submit(self._score, batch)
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
            self.throttle.tick()

    def _score(self, batch: list[ParsedEvent]) -> BatchResult:
        started = time.monotonic()
        txn_ids = [p.event.txn_id for p in batch]
        body = encode_request(batch)
        key = idempotency_key(txn_ids)
        outcome = self.throttle.call(lambda: self.client.attempt(body, txn_ids, key))
        return BatchResult(batch, outcome, time.monotonic() - started)


_RUNTIMES: dict[ScoringConfig, ScoringRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def shared_runtime(config: ScoringConfig) -> ScoringRuntime:
    """The process-wide runtime for `config` (the default `RuntimeFactory`): one throttle per process."""
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(config)
        if runtime is None:
            runtime = _RUNTIMES[config] = ScoringRuntime(config)
        return runtime


def close_runtimes() -> None:
    """Closes every runtime of this process (the launcher calls it when a local run ends);
    the next `shared_runtime` call starts a fresh one."""
    with _RUNTIMES_LOCK:
        runtimes = list(_RUNTIMES.values())
        _RUNTIMES.clear()
    for runtime in runtimes:
        runtime.close()
