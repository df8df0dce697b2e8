"""Baseline `naive`: a big shared thread pool (no in-flight cap) and immediate retries on
429/5xx/timeouts, with no backoff and no budget (up to `MAX_ATTEMPTS`)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter

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

THREADS = 256
MAX_ATTEMPTS = 50


def _session() -> requests.Session:
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=THREADS, max_retries=0))
    return session


class _NaiveFn(PooledBatchFn):
    def pool(self) -> ThreadPoolExecutor:
        return shared("naive-pool", lambda: ThreadPoolExecutor(THREADS, thread_name_prefix="naive"))

    def call(self, batch: list[ParsedEvent]) -> CallResult:
        session = shared("naive-session", _session)
        body, headers = request_for(self.codec, batch)
        started = time.monotonic()
        status, reason, attempt = None, "no attempt", 0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            t0 = time.monotonic()
            IN_FLIGHT.add(1)
            try:
                resp = session.post(self._url, data=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
                status, content, error = resp.status_code, resp.content, None
            except requests.Timeout:
                status, content, error = None, b"", "timeout"
            except requests.ConnectionError:
                status, content, error = None, b"", "connection_error"
            finally:
                IN_FLIGHT.add(-1)
            reason = attempt_reason(status, error)
            record_attempt(reason, time.monotonic() - t0)
            if status == 200:
                return CallResult(batch, attempt, status, time.monotonic() - started, body=content)
            if error is None and not (status == 429 or 500 <= status < 600):
                break  # 4xx other than 429: retrying cannot help
        return CallResult(batch, attempt, status, time.monotonic() - started, reason=f"gave up: {reason}")


def naive_scoring(contract: Contract, batch_size: int) -> PooledScoring:
    return PooledScoring(_NaiveFn(contract), batch_size, "ScoreNaive")
