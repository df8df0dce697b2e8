"""`HttpJsonCaller`: one attempt at an HTTP JSON service, as its contract describes it.

aiohttp on the runtime's event loop: with a thread per outstanding batch,
thread hand-offs cost several times the HTTP work itself. Every attempt ends
as an `AttemptResult`, whatever the service or the network did:
- a success status with a body of the documented shape -> results (a result
  that is missing or wrong costs only its event); a body cut short or not JSON
  -> retryable; a complete body of the wrong shape -> the batch is rejected;
- other statuses by the contract's status classes (`signals.StatusClasses`);
  a refused credential is looked up again first, so a token rotated on disk is
  retried with instead of stopping the job;
- refused or reset connections and timeouts -> retryable (congestion);
- a name that does not resolve, a certificate that is rejected -> stop: waiting
  cannot heal them.
Retries are not the caller's business (they would hide attempts from the
controller); redirects are not followed (a credential must never follow a
redirect to another host: a 3xx is in no status class, so it stops the job);
bodies are read up to a bound.
"""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from transforms.contract.codec import Codec, InvalidResponse
from transforms.contract.schema import Event
from transforms.contract.secrets import SecretReader, SecretSource
from transforms.control.signals import (
    AttemptKind,
    AttemptResult,
    StatusClasses,
    connection_refused,
    parse_policy_rps,
    parse_retry_after,
    stop,
    succeeded,
    timed_out,
)

AUTH_STATUS = frozenset({401, 403, 407})
_DNS_NOT_FOUND = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


@dataclass(frozen=True)
class Auth:
    kind: str                      # bearer | basic | header
    secret: SecretSource           # the token, the password or the header's value
    username: str | None = None    # basic
    header: str | None = None      # header: its name (e.g. X-API-Key)

    def __post_init__(self) -> None:
        if self.kind not in ("bearer", "basic", "header"):
            raise ValueError(f"auth.type must be bearer, basic or header (got {self.kind!r})")
        if self.kind == "basic" and not self.username:
            raise ValueError("auth.type basic needs auth.username")
        if self.kind == "header" and not self.header:
            raise ValueError("auth.type header needs auth.header (the header's name)")

    def headers(self, secret: str | None) -> dict[str, str]:
        if secret is None:
            return {}
        if self.kind == "bearer":
            return {"Authorization": f"Bearer {secret}"}
        if self.kind == "basic":
            return {"Authorization": aiohttp.BasicAuth(self.username or "", secret).encode()}
        return {self.header or "": secret}


@dataclass(frozen=True)
class Tls:
    ca_file: str | None = None     # trust these CAs (else the system's)
    cert_file: str | None = None   # a client certificate (mTLS) ...
    key_file: str | None = None    # ... and its key
    verify: bool = True

    def context(self) -> ssl.SSLContext:
        """OSError or ssl.SSLError if a file cannot be used."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@dataclass(frozen=True)
class Endpoint:
    url: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    auth: Auth | None = None
    tls: Tls | None = None
    idempotency_header: str | None = "Idempotency-Key"
    connect_timeout_s: float = 3.0


class HttpJsonCaller:
    """A `Caller` of the service a contract describes. Elements are `schema.Event`s, or whatever
    `event_of` maps to one (the Kafka job's parsed records). Results are tuples of the response
    fields' values, in `response.fields` order (`Contract.as_dict` names them)."""

    def __init__(self, contract: Any, event_of: Callable[[Any], Event] | None = None) -> None:
        self.contract = contract   # a loader.Contract (not imported: the loader imports this module)
        self._event_of = event_of
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        contract = self.contract
        endpoint: Endpoint = contract.endpoint
        self._codec: Codec = contract.codec()
        self._status: StatusClasses = contract.status
        self._endpoint = endpoint
        self._max_bytes = contract.response.max_bytes
        self._secret = SecretReader(endpoint.auth.secret) if endpoint.auth else None
        self._with_auth: tuple[dict[str, str], int] | None = None
        ssl_context: ssl.SSLContext | bool = endpoint.tls.context() if endpoint.tls else True
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=ssl_context, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=endpoint.connect_timeout_s),
            skip_auto_headers=("User-Agent",))
        # The process id tells the service (and the benchmark's fairness figure) the workers apart.
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": f"throttled-enrichment pid/{os.getpid()}", **dict(endpoint.headers)}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, batch: Sequence[Any]) -> AttemptResult:
        assert self._session is not None, "open() first"
        events = [self._event_of(e) for e in batch] if self._event_of is not None else batch
        body = self._codec.encode_request(events)
        headers, version = self._current_headers()
        if self._endpoint.idempotency_header:
            headers = {**headers, self._endpoint.idempotency_header: self._codec.idempotency_key(events)}
        endpoint = self._endpoint
        try:
            async with self._session.request(endpoint.method, endpoint.url, data=body, headers=headers,
                                             allow_redirects=False) as resp:
                status = resp.status
                policy = parse_policy_rps(resp.headers.get("RateLimit-Policy"))
                payload = await self._read_bounded(resp)
                if isinstance(payload, AttemptResult):
                    return payload
                if status in self._status.success:
                    return self._success(payload, events, status, policy)
                result = self._status.classify(status, parse_retry_after(resp.headers.get("Retry-After")), policy,
                                               detail=_body_line(status, payload))
                return self._after_refusal(result, version)
        except aiohttp.ClientConnectorCertificateError as e:
            return stop("tls_rejected", f"the certificate of {endpoint.url} was rejected: {e.certificate_error}")
        except aiohttp.ClientConnectorSSLError as e:
            return stop("tls_failed", f"TLS with {endpoint.url} failed: {e}")
        except aiohttp.ClientConnectorDNSError as e:
            if getattr(e.os_error, "errno", None) in _DNS_NOT_FOUND:
                return stop("dns_not_found", f"the host of {endpoint.url} does not resolve ({e.os_error})")
            return connection_refused(f"name lookup failed: {e.os_error}")
        except aiohttp.ClientConnectorError as e:         # refused or unreachable
            return connection_refused(str(e.os_error))
        except asyncio.TimeoutError:                      # aiohttp's connect timeout
            return timed_out()
        except aiohttp.ClientError as e:                  # reset, disconnect, protocol error
            refusal = _tls_refusal(e)
            if refusal is not None:                       # e.g. the server wants a client certificate
                return stop("tls_failed", f"TLS with {endpoint.url} failed: {refusal}")
            return connection_refused(type(e).__name__)

    def _current_headers(self) -> tuple[dict[str, str], int]:
        """The headers every request carries, with the credential as it is now (rebuilt when the
        secret changes), and the secret's version they hold."""
        if self._secret is None or self._endpoint.auth is None:
            return self._headers, 0
        secret = self._secret.current()
        if self._with_auth is None or self._with_auth[1] != self._secret.version:
            self._with_auth = ({**self._headers, **self._endpoint.auth.headers(secret)}, self._secret.version)
        return self._with_auth

    def _after_refusal(self, result: AttemptResult, version: int) -> AttemptResult:
        """A refused credential that changed on disk meanwhile is retried with, not a reason to stop."""
        if (result.kind is AttemptKind.STOP and result.status in AUTH_STATUS and self._secret is not None):
            self._secret.current(force=True)
            if self._secret.version != version:
                return AttemptResult(AttemptKind.RETRYABLE, "credentials_rotated", status=result.status,
                                     detail="the credential changed since this attempt was sent")
            source = self._secret.source.describe()
            sent = (f"the credential in {source} was refused" if self._secret.current() is not None
                    else f"no credential was sent ({source} is unset or empty)")
            detail = f"{result.detail}; {sent}"
            return AttemptResult(result.kind, result.reason, status=result.status, detail=detail)
        return result

    async def _read_bounded(self, resp: aiohttp.ClientResponse) -> bytes | AttemptResult:
        """The body, or why there is none (the connection is then dropped): too large (rejected),
        or cut mid-read (retryable: a reset, fewer bytes than its Content-Length)."""
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > self._max_bytes:
                    resp.close()
                    return AttemptResult(AttemptKind.REJECTED, "response_too_large", status=resp.status,
                                         detail=f"the response exceeds {self._max_bytes} bytes")
                chunks.append(chunk)
        except aiohttp.ClientPayloadError:
            return AttemptResult(AttemptKind.RETRYABLE, "response_cut", status=resp.status)
        return b"".join(chunks)

    def _success(self, body: bytes, events: Sequence[Event], status: int, policy: float | None) -> AttemptResult:
        try:
            results = self._codec.decode_response(body, events)
        except InvalidResponse as exc:
            kind = AttemptKind.RETRYABLE if exc.retryable else AttemptKind.REJECTED
            return AttemptResult(kind, "invalid_response", status=status, policy_rps=policy, detail=str(exc))
        return succeeded(results, status, policy)


def _tls_refusal(error: BaseException) -> str | None:
    """What TLS refused, when the peer ended the handshake with an alert (a missing or unknown client
    certificate, no common protocol): waiting cannot heal it. A connection merely closed is not one."""
    cause = error.__cause__
    if isinstance(cause, ssl.SSLError) and not isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return str(cause.reason or cause)
    return None


def _body_line(status: int, body: bytes) -> str:
    """What the service said, for the reason line of a refusal (the first 120 characters)."""
    text = " ".join(body[:240].decode("utf-8", "replace").split())
    return f"status {status}: {text[:120]}" if text else f"status {status}"
