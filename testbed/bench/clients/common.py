"""What the thread-pool baselines share: a DoFn that hands batches to a process-wide pool, and the
attempt bookkeeping that makes their figures comparable with ours.

Requests are encoded, responses validated and outputs built by the contract's
codec (`transforms/contract/codec.py`), exactly as the pipeline's own caller does; each
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

from transforms.contract.codec import Codec, InvalidResponse
from transforms.contract.loader import Contract
from transforms.control.signals import ElementFailure
from transforms.enrichment.outcomes import Enriched, Failed
from transforms.enrichment.transform import outcome_bucket
from transforms.events import DeadLetter, ParsedEvent
from transforms.monitoring import metrics

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


def request_for(codec: Codec, batch: list[ParsedEvent]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a request for `batch`, as the pipeline's caller sends them."""
    events = [p.event for p in batch]
    return codec.encode_request(events), {"Content-Type": "application/json",
                                          "Idempotency-Key": codec.idempotency_key(events)}


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


def outputs_of(codec: Codec, result: CallResult) -> list[object]:
    """Enriched events for a valid 200, else one Failed per event (counted like ours)."""
    if result.body is not None:
        try:
            values = codec.decode_response(result.body, [p.event for p in result.batch])
        except InvalidResponse as exc:
            result.reason = f"invalid_response: {exc}"
        else:
            return enriched(result.batch, values, result.elapsed_s * 1000, result.attempts, result.status)
    _SCORE_DEAD_LETTERS.inc(len(result.batch))
    return [Failed(p, "gave_up", result.reason, result.attempts, result.status) for p in result.batch]


def enriched(batch: list[ParsedEvent], values: list, latency_ms: float, attempts: int,
             status: int | None) -> list[object]:
    """Outcomes of a decoded answer: Enriched, or Failed for a result that is missing or wrong."""
    out: list[object] = [Failed(p, v.reason, v.detail, attempts, status) if isinstance(v, ElementFailure)
                         else Enriched(p, v, attempts, latency_ms) for p, v in zip(batch, values)]
    ok = sum(isinstance(o, Enriched) for o in out)
    _EVENTS_SCORED.inc(ok)
    if ok < len(out):
        _SCORE_DEAD_LETTERS.inc(len(out) - ok)
    return out


def _windowed(value: object, ts_ms: int) -> WindowedValue:
    return WindowedValue(value, Timestamp(micros=ts_ms * 1000), [GlobalWindow()])


class PooledBatchFn(beam.DoFn):
    """process() hands each batch to a process-wide pool; finish_bundle waits for all of them.

    The common "make the DoFn concurrent" pattern: nothing bounds the queued
    batches except the bundle size.
    """

    def __init__(self, contract: Contract) -> None:
        self._contract = contract
        self._url = contract.endpoint.url
        self._pending: list[Future[CallResult]] = []

    @property
    def codec(self) -> Codec:
        return self._contract.codec()

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
            yield from outputs_of(self.codec, self._pending.pop(0).result())

    def finish_bundle(self) -> Iterable[WindowedValue]:
        pending, self._pending = self._pending, []
        for future in pending:
            result = future.result()
            for output, parsed in zip(outputs_of(self.codec, result), result.batch):
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
