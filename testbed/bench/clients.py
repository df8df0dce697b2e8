"""The scoring step of each benchmarked client, as a PTransform with our output contract.

Every client maps `ParsedEvent | DeadLetter` to one PCollection of
`ScoredEvent | DeadLetter` (dead letters of earlier stages pass through; one
output, no Flatten, so the FnApiRunner fuses the whole path into one stage),
so `EnrichPayments(score=...)` runs them with an identical
read/parse/write/commit path. The baselines are written
the way a user would write them, not tuned to lose:

* `naive`: a big shared thread pool (no in-flight cap), immediate retries on
  429/5xx/timeouts with no backoff and no budget (up to `NAIVE_MAX_ATTEMPTS`).
* `pool`: 16 threads + urllib3 `Retry(total=5, backoff_factor=0.1,
  status_forcelist=[429, 502, 503, 504], allowed_methods=None,
  respect_retry_after_header=True)`, the textbook "requests with retries".
* `beam`: Beam's `RequestResponseIO` (in `beam_client.py`).

Each baseline also reports its requests and latencies into the process-wide
TELEMETRY under the names ours uses, so the benchmark reads them the same way.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.events import ParsedEvent
from transforms.outputs import DeadLetter, ScoredEvent
from transforms.scoring_runtime import idempotency_key
from transforms.telemetry import TELEMETRY

CLIENTS = ("ours", "naive", "pool", "beam")
NAIVE_THREADS = 256
NAIVE_MAX_ATTEMPTS = 50
POOL_THREADS = 16
REQUEST_TIMEOUT_S = 10.0


# ---- shared pieces ------------------------------------------------------------------------

def request_body(batch: Sequence[ParsedEvent]) -> bytes:
    return json.dumps([p.event.to_dict() for p in batch], separators=(",", ":")).encode()


def outcome_of(status: Optional[int], error: Optional[str] = None) -> str:
    """Same buckets as ours (`transforms.throttled_scoring.REQUEST_OUTCOMES`)."""
    if error:
        return error
    if status == 200:
        return "ok"
    if status == 429:
        return "429"
    if status is not None and 500 <= status < 600:
        return "5xx"
    return "other"


def record_attempt(outcome: str, latency_s: float) -> None:
    TELEMETRY.inc("requests", outcome=outcome)
    TELEMETRY.observe("request_latency_ms", latency_s * 1000)


def parse_results(body: bytes, batch: Sequence[ParsedEvent]) -> Optional[List[Dict[str, Any]]]:
    try:
        results = json.loads(body)["results"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(results, list) or [r.get("txn_id") for r in results] != [p.event.txn_id for p in batch]:
        return None
    return results


def scored_events(batch: Sequence[ParsedEvent], results: Sequence[Dict[str, Any]], latency_ms: float,
                  attempts: int) -> List[ScoredEvent]:
    return [ScoredEvent(p, float(r["score"]), str(r["decision"]), str(r.get("model_version", "")),
                        latency_ms, attempts) for p, r in zip(batch, results)]


def dead_letters(batch: Sequence[ParsedEvent], reason: str, attempts: int,
                 status: Optional[int]) -> List[DeadLetter]:
    return [DeadLetter(reason=reason, stage="score", payload=p.raw, source=p.source, txn_id=p.event.txn_id,
                       attempts=attempts, last_status=status) for p in batch]


def _windowed(value: object, ts_ms: int) -> WindowedValue:
    return WindowedValue(value, Timestamp(micros=ts_ms * 1000), [GlobalWindow()])


class _Gauge:
    """Requests outstanding at the service from this process (for the in-flight plot)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, delta: int) -> None:
        with self._lock:
            self.value += delta
            TELEMETRY.set("in_flight", self.value)


_IN_FLIGHT = _Gauge()
_SHARED: Dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()


def _shared(name: str, make: Callable[[], Any]) -> Any:
    """One pool/session per process, whatever the number of DoFn instances."""
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = make()
        return _SHARED[name]


class _PooledBatchFn(beam.DoFn):
    """process() hands each batch to a process-wide pool; finish_bundle waits for all of them.

    The common "make the DoFn concurrent" pattern: nothing bounds the queued
    batches except the bundle size.
    """

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/") + "/score"
        self._pending: List[Future] = []

    def _pool(self) -> ThreadPoolExecutor:
        raise NotImplementedError

    def _call(self, batch: List[ParsedEvent]) -> Tuple[List[ParsedEvent], Optional[List[Dict[str, Any]]], int,
                                                       Optional[int], str, float]:
        raise NotImplementedError

    def start_bundle(self) -> None:
        self._pending = []

    def process(self, batch: List[object]) -> Iterator[object]:
        events = [e for e in batch if isinstance(e, ParsedEvent)]
        yield from (e for e in batch if isinstance(e, DeadLetter))   # earlier stages' dead letters
        if events:
            self._pending.append(self._pool().submit(self._call, events))
        while self._pending and self._pending[0].done():
            yield from (v for v, _ in self._emit(self._pending.pop(0).result()))

    def finish_bundle(self) -> Iterable[WindowedValue]:
        pending, self._pending = self._pending, []
        for future in pending:
            for value, ts_ms in self._emit(future.result()):
                yield _windowed(value, ts_ms)

    @staticmethod
    def _emit(result) -> Iterator[Tuple[object, int]]:
        batch, results, attempts, status, reason, elapsed_s = result
        if results is not None:
            TELEMETRY.inc("events_scored", len(batch))
            for scored in scored_events(batch, results, elapsed_s * 1000, attempts):
                yield scored, scored.parsed.timestamp_ms
            return
        TELEMETRY.inc("score_dead_letters", len(batch))
        for letter, parsed in zip(dead_letters(batch, reason, attempts, status), batch):
            yield letter, parsed.timestamp_ms


def _batched(events: beam.PCollection, batch_size: int, label: str) -> beam.PCollection:
    return events | label >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)


# ---- (b) naive ------------------------------------------------------------------------------

class _NaiveFn(_PooledBatchFn):
    def _pool(self) -> ThreadPoolExecutor:
        return _shared("naive-pool", lambda: ThreadPoolExecutor(NAIVE_THREADS, thread_name_prefix="naive"))

    def _session(self):
        import requests
        from requests.adapters import HTTPAdapter

        def make():
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_maxsize=NAIVE_THREADS, max_retries=0))
            return session
        return _shared("naive-session", make)

    def _call(self, batch):
        import requests
        session, body = self._session(), request_body(batch)
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": idempotency_key([p.event.txn_id for p in batch])}
        started = time.monotonic()
        status, reason = None, "no attempt"
        for attempt in range(1, NAIVE_MAX_ATTEMPTS + 1):
            t0 = time.monotonic()
            _IN_FLIGHT.add(1)
            try:
                resp = session.post(self._url, data=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
                status, content, error = resp.status_code, resp.content, None
            except requests.Timeout:
                status, content, error = None, b"", "timeout"
            except requests.ConnectionError:
                status, content, error = None, b"", "connection_error"
            finally:
                _IN_FLIGHT.add(-1)
            record_attempt(outcome_of(status, error), time.monotonic() - t0)
            if status == 200:
                results = parse_results(content, batch)
                return batch, results, attempt, status, "invalid response", time.monotonic() - started
            reason = error or f"http_{status}"
            if error is None and not (status == 429 or 500 <= status < 600):
                break  # 4xx other than 429: retrying cannot help
        return batch, None, attempt, status, f"gave up: {reason}", time.monotonic() - started


class NaiveScoring(beam.PTransform):
    def __init__(self, url: str, batch_size: int) -> None:
        super().__init__()
        self._url, self._batch_size = url, batch_size

    def expand(self, events):
        return (_batched(events, self._batch_size, "Batch")
                | "ScoreNaive" >> beam.ParDo(_NaiveFn(self._url)))


# ---- (c) fixed pool + urllib3 Retry -----------------------------------------------------------

def urllib3_retry():
    from urllib3.util.retry import Retry
    return Retry(total=5, backoff_factor=0.1, status_forcelist=[429, 502, 503, 504], allowed_methods=None,
                 respect_retry_after_header=True, raise_on_status=False)


class _PoolFn(_PooledBatchFn):
    def _pool(self) -> ThreadPoolExecutor:
        return _shared("pool-pool", lambda: ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="pool"))

    def _http(self):
        import urllib3
        return _shared("pool-http", lambda: urllib3.PoolManager(maxsize=POOL_THREADS, retries=urllib3_retry()))

    def _call(self, batch):
        import urllib3
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": idempotency_key([p.event.txn_id for p in batch])}
        started = time.monotonic()
        _IN_FLIGHT.add(1)
        try:
            resp = self._http().request("POST", self._url, body=request_body(batch), headers=headers,
                                        timeout=urllib3.Timeout(connect=3.0, read=REQUEST_TIMEOUT_S))
            status, error = resp.status, None
            attempts = 1 + (len(resp.retries.history) if resp.retries is not None else 0)
        except urllib3.exceptions.MaxRetryError as exc:
            status, error, attempts = None, "timeout" if "timed out" in str(exc.reason) else "connection_error", 6
        finally:
            _IN_FLIGHT.add(-1)
        elapsed = time.monotonic() - started
        record_attempt(outcome_of(status, error), elapsed)   # one call (urllib3 hides its retries)
        if status == 200:
            return batch, parse_results(resp.data, batch), attempts, status, "invalid response", elapsed
        return batch, None, attempts, status, f"gave up: {error or f'http_{status}'}", elapsed


class PoolScoring(beam.PTransform):
    def __init__(self, url: str, batch_size: int) -> None:
        super().__init__()
        self._url, self._batch_size = url, batch_size

    def expand(self, events):
        return (_batched(events, self._batch_size, "Batch")
                | "ScorePool" >> beam.ParDo(_PoolFn(self._url)))


def make_client(name: str, url: str, batch_size: int) -> Optional[beam.PTransform]:
    """None = the pipeline's default step (ours, configured by the pipeline options)."""
    if name == "ours":
        return None
    if name == "naive":
        return NaiveScoring(url, batch_size)
    if name == "pool":
        return PoolScoring(url, batch_size)
    if name == "beam":
        # Its own module: RequestResponseIO imports the google-cloud libraries (slow).
        from testbed.bench.beam_client import BeamRequestResponseScoring
        return BeamRequestResponseScoring(url, batch_size)
    raise ValueError(f"unknown client {name!r} (choose from {', '.join(CLIENTS)})")
