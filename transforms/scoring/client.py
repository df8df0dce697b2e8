"""One HTTP attempt at the fraud-scoring service, classified for the throttle.

aiohttp on the scoring runtime's event loop, one connection pool sized to the
in-flight cap. Every request of a worker process runs on that one loop: with a
thread per outstanding batch, thread hand-offs and lock wake-ups cost several
times the HTTP work itself (measured: ~750 us of CPU per request with
`requests`, then urllib3, on threads; aiohttp alone is ~150 us). Retries are
not the client's business (they would hide attempts from the controller),
redirects are refused (a token must never follow a redirect to another host),
and response bodies are read up to a bound.

Every attempt ends as an `AttemptResult`, whatever the service or the network
did: an exception here would reach the scoring runtime and, through it, the
bundle, which the runner retries with the same batch. A body cut short is
retryable (within the retry budget), a 200 of the wrong shape is fatal (see
`codec.InvalidResponse`).
"""
from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import Sequence

import aiohttp

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
    """Create and use it on one event loop (aiohttp's session belongs to the loop it was made on)."""

    def __init__(self, url: str, token: str | None = None, pool_size: int = 32,
                 connect_timeout_s: float = 3.0, read_timeout_s: float = 10.0,
                 max_response_bytes: int = 4 * 1024 * 1024) -> None:
        self.url = url.rstrip("/") + "/score"
        self._max_response_bytes = max_response_bytes
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool_size, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s),
            skip_auto_headers=("User-Agent",))
        # The process id tells the service (and the benchmark's fairness figure) the workers apart.
        self._headers = {"Content-Type": "application/json", "User-Agent": f"payment-enrichment pid/{os.getpid()}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    async def close(self) -> None:
        await self._session.close()

    async def attempt(self, body: bytes, txn_ids: Sequence[str], idempotency_key: str) -> AttemptResult:
        headers = dict(self._headers, **{"Idempotency-Key": idempotency_key})
        try:
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                policy = parse_policy_rps(resp.headers.get("RateLimit-Policy"))
                payload = await self._read_bounded(resp)
                if status == 200:
                    return self._success(payload, txn_ids, policy)
                return classify_status(status, parse_retry_after(resp.headers.get("Retry-After")), policy)
        except aiohttp.ClientConnectorError:        # refused or unreachable
            return connection_refused()
        except TimeoutError:                        # asyncio's, raised for connect and read timeouts alike
            return timed_out()
        except aiohttp.ClientError:                 # reset, disconnect, protocol error
            return connection_refused()

    async def _read_bounded(self, resp: aiohttp.ClientResponse) -> bytes | AttemptResult:
        """The body, or why there is none (the connection is then dropped): too large (fatal),
        or cut mid-read (retryable: a reset, fewer bytes than its Content-Length)."""
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > self._max_response_bytes:
                    resp.close()
                    return AttemptResult(AttemptKind.FATAL, "response_too_large", status=resp.status)
                chunks.append(chunk)
        except aiohttp.ClientPayloadError:
            return AttemptResult(AttemptKind.RETRYABLE, "response_cut", status=resp.status)
        return b"".join(chunks)

    def _success(self, body: bytes | AttemptResult, txn_ids: Sequence[str], policy: float | None) -> AttemptResult:
        if isinstance(body, AttemptResult):
            return body
        try:
            verdicts = decode_response(body, txn_ids)
        except InvalidResponse as exc:
            kind = AttemptKind.RETRYABLE if exc.retryable else AttemptKind.FATAL
            return AttemptResult(kind, f"invalid_response: {exc}", status=200, policy_rps=policy)
        return classify_status(200, policy_rps=policy, value=verdicts)
