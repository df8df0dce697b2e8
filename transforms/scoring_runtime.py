"""The per-process scoring machinery shared by every DoFn instance and thread.

The in-flight cap must be one limit per worker process: a cap per DoFn
instance multiplies with the runner's parallelism. So the throttle, the HTTP
session and the worker threads live in a process-wide registry keyed by the
configuration, and DoFns only submit batches to it.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from transforms.control.backoff import FullJitterBackoff
from transforms.control.rate_controller import CubicRateController
from transforms.control.retry_budget import RetryBudget
from transforms.control.throttle import AdaptiveThrottle, CallOutcome
from transforms.events import ParsedEvent
from transforms.scoring_client import ScoringClient, read_token
from transforms.telemetry import TELEMETRY


@dataclass(frozen=True)
class ScoringConfig:
    url: str
    max_in_flight: int = 32
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
    token_env: Optional[str] = "SCORING_TOKEN"
    token_file: Optional[str] = None


@dataclass
class BatchResult:
    batch: List[ParsedEvent]
    outcome: CallOutcome
    elapsed_s: float


class ScoringRuntime:
    """Throttle + client + a bounded pool of worker threads.

    `submit` blocks while `2 x max_in_flight` batches are outstanding, so a
    slow service stalls the caller (and the Kafka reader behind it) instead of
    queueing batches in memory.
    """

    def __init__(self, config: ScoringConfig) -> None:
        self.config = config
        controller = CubicRateController(initial_rate=config.initial_rate, min_rate=config.min_rate,
                                         max_rate=config.max_rate)
        self.throttle = AdaptiveThrottle(
            controller, max_in_flight=config.max_in_flight,
            budget=RetryBudget(ratio=config.retry_budget_ratio, min_per_s=config.retry_budget_min_per_s),
            backoff=FullJitterBackoff(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s),
            max_attempts=config.max_attempts, deadline_s=config.deadline_s)
        self.client = ScoringClient(config.url, token=read_token(config.token_env, config.token_file), pool_size=config.max_in_flight,
                                    read_timeout_s=config.request_timeout_s)
        self.max_outstanding = 2 * config.max_in_flight
        self._slots = threading.BoundedSemaphore(self.max_outstanding)
        self._pool = ThreadPoolExecutor(self.max_outstanding, thread_name_prefix="scoring")
        TELEMETRY.sampler("scoring", self._sample_gauges)

    def _sample_gauges(self) -> None:
        TELEMETRY.set("rate_limit_rps", self.throttle.controller.rate)
        TELEMETRY.set("in_flight", self.throttle.inflight.in_flight)
        TELEMETRY.set("in_flight_limit", self.throttle.inflight.limit)

    def submit(self, batch: List[ParsedEvent]) -> "Future[BatchResult]":
        self._slots.acquire()
        try:
            future = self._pool.submit(self._score, batch)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def _score(self, batch: List[ParsedEvent]) -> BatchResult:
        started = time.monotonic()
        txn_ids = [p.event.txn_id for p in batch]
        body = json.dumps([p.event.to_dict() for p in batch], separators=(",", ":")).encode()
        key = idempotency_key(txn_ids)
        outcome = self.throttle.call(lambda: self.client.attempt(body, txn_ids, key))
        return BatchResult(batch, outcome, time.monotonic() - started)


def idempotency_key(txn_ids: Sequence[str]) -> str:
    """Stable per batch content, so a runner's bundle retry re-sends the same key."""
    return hashlib.sha256("\n".join(txn_ids).encode()).hexdigest()[:32]


_RUNTIMES: Dict[ScoringConfig, ScoringRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def shared_runtime(config: ScoringConfig) -> ScoringRuntime:
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(config)
        if runtime is None:
            runtime = _RUNTIMES[config] = ScoringRuntime(config)
        return runtime
