"""One HTTP attempt at the fraud-scoring service, classified for the throttle.

urllib3 directly (what `requests` runs on), with one connection pool sized to
the in-flight cap: `requests`' per-call work (environment, proxy and netrc
lookups, hooks, cookie handling) cost more CPU than the rest of the scoring
client together. Retries are off (they would hide attempts from the
controller), redirects are refused (a token must never follow a redirect to
another host), and response bodies are read up to a bound.
"""
from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import Sequence

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError

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
        self._path = urllib3.util.parse_url(self.url).request_uri
        self._max_response_bytes = max_response_bytes
        self._pool = urllib3.connection_from_url(
            self.url, maxsize=pool_size, block=False, retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s))
        # The process id tells the service (and the benchmark's fairness figure) the workers apart.
        self._headers = {"Content-Type": "application/json", "User-Agent": f"payment-enrichment pid/{os.getpid()}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._pool.close()

    def attempt(self, body: bytes, txn_ids: Sequence[str], idempotency_key: str) -> AttemptResult:
        headers = dict(self._headers, **{"Idempotency-Key": idempotency_key})
        try:
            resp = self._pool.urlopen("POST", self._path, body=body, headers=headers, redirect=False,
                                      retries=False, preload_content=False, assert_same_host=False)
        except NewConnectionError:        # refused or unreachable (a subclass of the connect timeout)
            return connection_refused()
        except TimeoutError:
            return timed_out()
        except HTTPError:                 # reset, broken pipe, protocol error
            return connection_refused()
        try:
            status = resp.status
            policy = parse_policy_rps(resp.headers.get("RateLimit-Policy"))
            body_or_none = self._read_bounded(resp)
            if status == 200:
                return self._success(body_or_none, txn_ids, policy)
            return classify_status(status, parse_retry_after(resp.headers.get("Retry-After")), policy)
        finally:
            resp.release_conn()

    def _read_bounded(self, resp: urllib3.BaseHTTPResponse) -> bytes | None:
        """The body, or None if it is larger than the bound or was cut (the connection is then dropped)."""
        try:
            data = resp.read(self._max_response_bytes + 1)
        except HTTPError:
            resp.close()
            return None
        if len(data) > self._max_response_bytes:
            resp.close()
            return None
        return data

    def _success(self, body: bytes | None, txn_ids: Sequence[str], policy: float | None) -> AttemptResult:
        if body is None:
            return AttemptResult(AttemptKind.FATAL, "response_too_large_or_cut", status=200, policy_rps=policy)
        try:
            verdicts = decode_response(body, txn_ids)
        except InvalidResponse as exc:
            return AttemptResult(AttemptKind.FATAL, f"invalid_response: {exc}", status=200, policy_rps=policy)
        return classify_status(200, policy_rps=policy, value=verdicts)
