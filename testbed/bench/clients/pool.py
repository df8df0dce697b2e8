"""Baseline `pool`: 16 threads + urllib3 `Retry(total=5, backoff_factor=0.1,
status_forcelist=[429, 502, 503, 504], allowed_methods=None, respect_retry_after_header=True)`,
the textbook "requests with retries"."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import urllib3
from urllib3.util.retry import Retry

from testbed.bench.clients.common import (
    IN_FLIGHT,
    REQUEST_TIMEOUT_S,
    CallResult,
    PooledBatchFn,
    PooledScoring,
    attempt_reason,
    record_attempt,
    request_for,
    shared,
)
from transforms.contract.loader import Contract
from transforms.events import ParsedEvent

THREADS = 16


def urllib3_retry() -> Retry:
    return Retry(total=5, backoff_factor=0.1, status_forcelist=[429, 502, 503, 504], allowed_methods=None,
                 respect_retry_after_header=True, raise_on_status=False)


class _PoolFn(PooledBatchFn):
    def pool(self) -> ThreadPoolExecutor:
        return shared("pool-pool", lambda: ThreadPoolExecutor(THREADS, thread_name_prefix="pool"))

    def call(self, batch: list[ParsedEvent]) -> CallResult:
        http = shared("pool-http", lambda: urllib3.PoolManager(maxsize=THREADS, retries=urllib3_retry()))
        started = time.monotonic()
        IN_FLIGHT.add(1)
        try:
            body, headers = request_for(self.codec, batch)
            resp = http.request("POST", self._url, body=body, headers=headers,
                                timeout=urllib3.Timeout(connect=3.0, read=REQUEST_TIMEOUT_S))
            status, error = resp.status, None
            attempts = 1 + (len(resp.retries.history) if resp.retries is not None else 0)
        except urllib3.exceptions.MaxRetryError as exc:
            status, error, attempts = None, "timeout" if "timed out" in str(exc.reason) else "connection_error", 6
        finally:
            IN_FLIGHT.add(-1)
        elapsed = time.monotonic() - started
        reason = attempt_reason(status, error)
        record_attempt(reason, elapsed)   # one call (urllib3 hides its retries)
        if status == 200:
            return CallResult(batch, attempts, status, elapsed, body=resp.data)
        return CallResult(batch, attempts, status, elapsed, reason=f"gave up: {reason}")


def pool_scoring(contract: Contract, batch_size: int) -> PooledScoring:
    return PooledScoring(_PoolFn(contract), batch_size, "ScorePool")
