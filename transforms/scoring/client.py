"""One HTTP attempt at the fraud-scoring service, classified for the throttle.

`requests` with a pooled session sized to the in-flight cap; urllib3's own
retries are off (they would hide attempts from the controller) and redirects
are refused (a token must never follow a redirect to another host). Response
bodies are read up to a bound.
"""
from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import Sequence

import requests
from requests.adapters import HTTPAdapter

from transforms.control.signals import AttemptKind, AttemptResult, classify_status, connection_refused, timed_out
from transforms.scoring.codec import InvalidResponse, decode_response

_POLICY_Q = re.compile(r"\bq=(\d+(?:\.\d+)?)")
_POLICY_W = re.compile(r"\bw=(\d+(?:\.\d+)?)")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_policy_rps(value: str | None) -> float | None:
    """Requests/s from `RateLimit-Policy: "default";q=333;w=1` (draft-ietf-httpapi-ratelimit-headers)."""
    if not value:
        return None
    q, w = _POLICY_Q.search(value), _POLICY_W.search(value)
    if not q:
        return None
    window = float(w.group(1)) if w else 1.0
    return float(q.group(1)) / window if window > 0 else None


def read_token(env_var: str | None, path: str | None) -> str | None:
    """The bearer token, from a file (wins) or an environment variable.

    Read where the requests are made (on the worker), so the token never
    travels inside the pipeline graph or the job jar; raises OSError if the
    file cannot be read.
    """
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return os.environ.get(env_var) if env_var else None


class ScoringClient:
    def __init__(self, url: str, token: str | None = None, pool_size: int = 32,
                 connect_timeout_s: float = 3.0, read_timeout_s: float = 10.0,
                 max_response_bytes: int = 4 * 1024 * 1024) -> None:
        self.url = url.rstrip("/") + "/score"
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._max_response_bytes = max_response_bytes
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0, pool_block=False)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # The process id tells the service (and the benchmark's fairness figure) the workers apart.
        self._headers = {"Content-Type": "application/json", "User-Agent": f"payment-enrichment pid/{os.getpid()}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._session.close()

    def attempt(self, body: bytes, txn_ids: Sequence[str], idempotency_key: str) -> AttemptResult:
        headers = dict(self._headers, **{"Idempotency-Key": idempotency_key})
        try:
            resp = self._session.post(self.url, data=body, headers=headers, timeout=self._timeout,
                                      allow_redirects=False, stream=True)
        except requests.Timeout:
            return timed_out()
        except requests.ConnectionError:
            return connection_refused()
        with resp:
            status = resp.status_code
            policy = parse_policy_rps(resp.headers.get("RateLimit-Policy"))
            if status == 200:
                return self._success(resp, txn_ids, policy)
            # Drain a bounded amount so the connection can be reused.
            self._read_bounded(resp)
            return classify_status(status, parse_retry_after(resp.headers.get("Retry-After")), policy)

    def _read_bounded(self, resp: requests.Response) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(64 * 1024):
                size += len(chunk)
                if size > self._max_response_bytes:
                    return None
                chunks.append(chunk)
        except requests.RequestException:
            return None
        return b"".join(chunks)

    def _success(self, resp: requests.Response, txn_ids: Sequence[str], policy: float | None) -> AttemptResult:
        body = self._read_bounded(resp)
        if body is None:
            return AttemptResult(AttemptKind.FATAL, "response_too_large_or_cut", status=200, policy_rps=policy)
        try:
            verdicts = decode_response(body, txn_ids)
        except InvalidResponse as exc:
            return AttemptResult(AttemptKind.FATAL, f"invalid_response: {exc}", status=200, policy_rps=policy)
        return classify_status(200, policy_rps=policy, value=verdicts)
