"""Baseline (d): Beam's `RequestResponseIO` with its defaults (repeater, throttler, 30 s timeout).

The `Caller` maps 429 -> `UserCodeQuotaException`, 5xx and other statuses ->
`UserCodeExecutionException`, timeouts -> `UserCodeTimeoutException`, and asks
for batches through `batch_elements_kwargs`. RequestResponseIO has no failure
output: a call that still fails after its repeater raises and fails the bundle,
so it never produces a dead letter of its own (the benchmark's drain loop restarts the drain, as
a production runner would retry the bundle).
"""
from __future__ import annotations

import time
from typing import Iterator, List, Sequence

import apache_beam as beam
import requests
from apache_beam.io.requestresponse import (Caller, RequestResponseIO, UserCodeExecutionException,
                                            UserCodeQuotaException, UserCodeTimeoutException)

from testbed.bench.clients import (_IN_FLIGHT, REQUEST_TIMEOUT_S, outcome_of, parse_results, record_attempt,
                                   request_body, scored_events)
from transforms.events import ParsedEvent
from transforms.outputs import DeadLetter, ScoredEvent
from transforms.scoring_runtime import idempotency_key
from transforms.telemetry import TELEMETRY


class ScoringCaller(Caller):
    """List[ParsedEvent | DeadLetter] -> List[ScoredEvent | DeadLetter]; raises what RequestResponseIO
    expects. Earlier stages' dead letters in a batch are returned as they are, without a call."""

    def __init__(self, url: str, batch_size: int) -> None:
        self._url = url.rstrip("/") + "/score"
        self._batch_size = batch_size
        self._session = None

    def __enter__(self):
        self._session = requests.Session()
        return self

    def __exit__(self, *exc_info):
        if self._session is not None:
            self._session.close()
        return None

    def __call__(self, items: Sequence[object], *args, **kwargs) -> List[object]:
        passed: List[object] = [i for i in items if isinstance(i, DeadLetter)]
        batch = [i for i in items if isinstance(i, ParsedEvent)]
        if not batch:
            return passed
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": idempotency_key([p.event.txn_id for p in batch])}
        t0 = time.monotonic()
        _IN_FLIGHT.add(1)
        try:
            resp = self._session.post(self._url, data=request_body(batch), headers=headers,
                                      timeout=REQUEST_TIMEOUT_S)
        except requests.Timeout as exc:
            record_attempt("timeout", time.monotonic() - t0)
            raise UserCodeTimeoutException(str(exc)) from exc
        except requests.ConnectionError as exc:
            record_attempt("connection_error", time.monotonic() - t0)
            raise UserCodeExecutionException(str(exc)) from exc
        finally:
            _IN_FLIGHT.add(-1)
        record_attempt(outcome_of(resp.status_code), time.monotonic() - t0)
        if resp.status_code == 429:
            raise UserCodeQuotaException(f"429: {resp.text[:200]}")
        if resp.status_code != 200:
            raise UserCodeExecutionException(f"{resp.status_code}: {resp.text[:200]}")
        results = parse_results(resp.content, batch)
        if results is None:
            raise UserCodeExecutionException("response does not match the request")
        return passed + scored_events(batch, results, (time.monotonic() - t0) * 1000, 1)

    def batch_elements_kwargs(self):
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}


class _CountFn(beam.DoFn):
    """Counts what RequestResponseIO returns (with batching it already flattens the lists)."""

    def process(self, outcome) -> Iterator[object]:
        items = outcome if isinstance(outcome, list) else [outcome]
        TELEMETRY.inc("events_scored", sum(isinstance(i, ScoredEvent) for i in items))
        yield from items


class BeamRequestResponseScoring(beam.PTransform):
    def __init__(self, url: str, batch_size: int) -> None:
        super().__init__()
        self._url, self._batch_size = url, batch_size

    def expand(self, events):
        return (events
                | "RequestResponseIO" >> RequestResponseIO(ScoringCaller(self._url, self._batch_size))
                | "Outcomes" >> beam.ParDo(_CountFn()))
