"""Baseline `beam`: Beam's `RequestResponseIO` with its defaults (repeater, throttler, 30 s timeout).

The `Caller` maps 429 -> `UserCodeQuotaException`, 5xx and other statuses ->
`UserCodeExecutionException`, timeouts -> `UserCodeTimeoutException`, and asks
for batches through `batch_elements_kwargs`. RequestResponseIO has no failure
output: a call that still fails after its repeater raises and fails the bundle,
so it never produces a dead letter of its own (the benchmark's drain loop restarts the drain, as
a production runner would retry the bundle). Imported only when used: RequestResponseIO
loads the google-cloud libraries.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import apache_beam as beam
import requests
from apache_beam.io.requestresponse import (
    Caller,
    RequestResponseIO,
    UserCodeExecutionException,
    UserCodeQuotaException,
    UserCodeTimeoutException,
)

from testbed.bench.clients.common import IN_FLIGHT, REQUEST_TIMEOUT_S, attempt_reason, enriched, record_attempt, request_for
from transforms.contract.codec import InvalidResponse
from transforms.contract.loader import Contract
from transforms.events import DeadLetter, ParsedEvent


class ScoringCaller(Caller):
    """List[ParsedEvent | DeadLetter] -> List[Enriched | Failed | DeadLetter]; raises what RequestResponseIO
    expects. Earlier stages' dead letters in a batch are returned as they are, without a call."""

    def __init__(self, contract: Contract, batch_size: int) -> None:
        self._contract = contract
        self._url = contract.endpoint.url
        self._batch_size = batch_size
        self._session: requests.Session | None = None

    def __enter__(self):
        self._session = requests.Session()
        return self

    def __exit__(self, *exc_info):
        if self._session is not None:
            self._session.close()
        return None

    def __call__(self, items: Sequence[object], *args, **kwargs) -> list[object]:
        passed: list[object] = [i for i in items if isinstance(i, DeadLetter)]
        batch = [i for i in items if isinstance(i, ParsedEvent)]
        if not batch:
            return passed
        assert self._session is not None
        codec = self._contract.codec()
        body, headers = request_for(codec, batch)
        t0 = time.monotonic()
        IN_FLIGHT.add(1)
        try:
            resp = self._session.post(self._url, data=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except requests.Timeout as exc:
            record_attempt("timeout", time.monotonic() - t0)
            raise UserCodeTimeoutException(str(exc)) from exc
        except requests.ConnectionError as exc:
            record_attempt("connection_error", time.monotonic() - t0)
            raise UserCodeExecutionException(str(exc)) from exc
        finally:
            IN_FLIGHT.add(-1)
        record_attempt(attempt_reason(resp.status_code), time.monotonic() - t0)
        if resp.status_code == 429:
            raise UserCodeQuotaException(f"429: {resp.text[:200]}")
        if resp.status_code != 200:
            raise UserCodeExecutionException(f"{resp.status_code}: {resp.text[:200]}")
        try:
            values = codec.decode_response(resp.content, [p.event for p in batch])
        except InvalidResponse as exc:
            raise UserCodeExecutionException(f"invalid response: {exc}") from exc
        return passed + enriched(batch, values, (time.monotonic() - t0) * 1000, 1, resp.status_code)

    def batch_elements_kwargs(self):
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}


class _FlattenFn(beam.DoFn):
    """What RequestResponseIO returns, one outcome per element (with batching it already flattens the lists)."""

    def process(self, outcome) -> Iterator[object]:
        yield from (outcome if isinstance(outcome, list) else [outcome])


class RequestResponseScoring(beam.PTransform):
    def __init__(self, contract: Contract, batch_size: int) -> None:
        super().__init__()
        self._contract, self._batch_size = contract, batch_size

    def expand(self, events):
        return (events
                | "RequestResponseIO" >> RequestResponseIO(ScoringCaller(self._contract, self._batch_size))
                | "Outcomes" >> beam.ParDo(_FlattenFn()))
