"""What the thread-pool baselines share: a DoFn that hands batches to a process-wide pool, and the
attempt bookkeeping that makes their figures comparable with ours.

Requests are encoded, responses validated and outputs built by
`transforms.scoring.codec`, exactly as the pipeline's own client does; each
attempt is counted under the same metric names (`requests`, `request_latency_ms`,
`in_flight`), so the benchmark reads every client the same way.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.events import DeadLetter, ParsedEvent
from transforms.monitoring import metrics
from transforms.scoring.codec import (
    InvalidResponse,
    dead_letters,
    decode_response,
    idempotency_key,
    outcome_bucket,
    scored_events,
)

REQUEST_TIMEOUT_S = 10.0

_REQUESTS = metrics.counter("requests")
_REQUEST_LATENCY_MS = metrics.distribution("request_latency_ms")
_IN_FLIGHT = metrics.gauge("in_flight")
_EVENTS_SCORED = metrics.counter("events_scored")
_SCORE_DEAD_LETTERS = metrics.counter("score_dead_letters")


@dataclass
class CallResult:
    """How one batch ended: `body` is the 200 response, else `reason` says why it gave up."""
    batch: list[ParsedEvent]
    attempts: int
    status: int | None
    elapsed_s: float
    body: bytes | None = None
    reason: str = ""


def headers_for(batch: list[ParsedEvent]) -> dict[str, str]:
    return {"Content-Type": "application/json",
            "Idempotency-Key": idempotency_key([p.event.txn_id for p in batch])}


def attempt_reason(status: int | None, error: str | None = None) -> str:
    """Same reasons as ours: "ok", "http_<status>", "timeout", "connection_error"."""
    if error:
        return error
    return "ok" if status == 200 else f"http_{status}"


def record_attempt(reason: str, latency_s: float) -> None:
    _REQUESTS.inc(outcome=outcome_bucket(reason))
    _REQUEST_LATENCY_MS.observe(latency_s * 1000)


class InFlight:
    """Requests outstanding at the service from this process (for the in-flight plot)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, delta: int) -> None:
        with self._lock:
            self.value += delta
            _IN_FLIGHT.set(self.value)


IN_FLIGHT = InFlight()
_SHARED: dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()


def shared(name: str, make: Callable[[], Any]) -> Any:
    """One pool/session per process, whatever the number of DoFn instances."""
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = make()
        return _SHARED[name]


def outputs_of(result: CallResult) -> list[object]:
    """ScoredEvents for a valid 200, else one dead letter per event (counted like ours)."""
    if result.body is not None:
        try:
            verdicts = decode_response(result.body, [p.event.txn_id for p in result.batch])
        except InvalidResponse as exc:
            result.reason = f"invalid_response: {exc}"
        else:
            _EVENTS_SCORED.inc(len(result.batch))
            return list(scored_events(result.batch, verdicts, result.elapsed_s * 1000, result.attempts))
    _SCORE_DEAD_LETTERS.inc(len(result.batch))
    return list(dead_letters(result.batch, result.reason, result.attempts, result.status))


def _windowed(value: object, ts_ms: int) -> WindowedValue:
    return WindowedValue(value, Timestamp(micros=ts_ms * 1000), [GlobalWindow()])


class PooledBatchFn(beam.DoFn):
    """process() hands each batch to a process-wide pool; finish_bundle waits for all of them.

    The common "make the DoFn concurrent" pattern: nothing bounds the queued
    batches except the bundle size.
    """

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/") + "/score"
        self._pending: list[Future[CallResult]] = []

    def pool(self) -> ThreadPoolExecutor:
        raise NotImplementedError

    def call(self, batch: list[ParsedEvent]) -> CallResult:
        raise NotImplementedError

    def start_bundle(self) -> None:
        self._pending = []

    def process(self, batch: list[object]) -> Iterator[object]:
        events = [e for e in batch if isinstance(e, ParsedEvent)]
        yield from (e for e in batch if isinstance(e, DeadLetter))   # earlier stages' dead letters
        if events:
            self._pending.append(self.pool().submit(self.call, events))
        while self._pending and self._pending[0].done():
            yield from outputs_of(self._pending.pop(0).result())

    def finish_bundle(self) -> Iterable[WindowedValue]:
        pending, self._pending = self._pending, []
        for future in pending:
            result = future.result()
            for output, parsed in zip(outputs_of(result), result.batch):
                yield _windowed(output, parsed.timestamp_ms)


class PooledScoring(beam.PTransform):
    """`BatchElements` of exactly `batch_size`, then the pooled DoFn."""

    def __init__(self, fn: PooledBatchFn, batch_size: int, label: str) -> None:
        super().__init__()
        self._fn, self._batch_size, self._label = fn, batch_size, label

    def expand(self, events):
        return (events
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | self._label >> beam.ParDo(self._fn))
