"""What one attempt at the service told us, and how an HTTP status maps onto it.

Four kinds, because a service's answers call for four different reactions:
success; *retryable* (wait and send again - overload, an outage, a timeout);
*rejected* (this batch will never be accepted: dead-letter it); and *stop*
(the job itself is wrong - a revoked token, a wrong URL - so every batch would
fail the same way: stop the job before its offsets are committed, instead of
dead-lettering the stream).
"""
from __future__ import annotations

import email.utils
import enum
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class AttemptKind(enum.Enum):
    SUCCESS = "success"
    RETRYABLE = "retryable"   # overload, outage, timeout, reset: another attempt may succeed
    REJECTED = "rejected"     # this batch is refused for what it is: dead letters
    STOP = "stop"             # the job is misconfigured: stop it, commit nothing more


@dataclass(frozen=True)
class ElementFailure:
    """One element of a successful attempt that got no usable result: it is dead-lettered alone.
    `reason` is a short code (`missing_result`, `invalid_result`, ...), `detail` one line."""
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class AttemptResult:
    kind: AttemptKind
    reason: str                       # short code: "ok", "http_429", "timeout", "connection_error", ...
    status: int | None = None         # HTTP status, None when no response arrived
    congestion: bool = False          # the service signalled overload: the learned rate drops
    retry_after_s: float | None = None
    policy_rps: float | None = None   # rate advertised by RateLimit-Policy, if any
    value: Any = None                 # on success: one result (or ElementFailure) per element, in order
    detail: str | None = None         # one line saying more than the code


@dataclass(frozen=True)
class StatusClasses:
    """Which HTTP statuses mean what. The defaults follow the major HTTP clients' retry rules
    (urllib3, Google API core, the AWS SDKs): 429 and 5xx gateway/unavailable errors are
    retried; an auth, path or method error means the job is misconfigured. A status in no
    class stops the job too: better a clear error than a stream of dead letters."""

    success: frozenset[int] = frozenset({200})
    retryable: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    congestion: frozenset[int] = frozenset({429, 503, 504})   # retryable ones that mean "slow down"
    reject: frozenset[int] = frozenset({400, 413, 422})
    stop: frozenset[int] = frozenset({401, 403, 404, 405, 407})

    def __post_init__(self) -> None:
        groups = {"success": self.success, "retryable": self.retryable, "reject": self.reject, "stop": self.stop}
        for name, codes in [*groups.items(), ("congestion", self.congestion)]:
            bad = sorted(c for c in codes if not 100 <= c <= 599)
            if bad:
                raise ValueError(f"status.{name}: {bad[0]} is not an HTTP status")
        seen: dict[int, str] = {}
        for name, codes in groups.items():
            for code in sorted(codes):
                if code in seen:
                    raise ValueError(f"status {code} is in both status.{seen[code]} and status.{name}")
                seen[code] = name
        if not self.congestion <= self.retryable:
            extra = sorted(self.congestion - self.retryable)
            raise ValueError(f"status.congestion: {extra[0]} must also be in status.retryable")
        if not self.success:
            raise ValueError("status.success must name at least one status")

    @classmethod
    def of(cls, **groups: Iterable[int]) -> StatusClasses:
        """The defaults with the given groups replaced (congestion, unless given, keeps the default
        statuses that are still retryable)."""
        defaults = cls()
        chosen = {name: frozenset(groups.get(name, getattr(defaults, name)))
                  for name in ("success", "retryable", "congestion", "reject", "stop")}
        if "congestion" not in groups:
            chosen["congestion"] &= chosen["retryable"]
        return cls(**chosen)

    def classify(self, status: int, retry_after_s: float | None = None, policy_rps: float | None = None,
                 detail: str | None = None) -> AttemptResult:
        """A non-success status as the throttle sees it."""
        reason = f"http_{status}"
        if status in self.retryable:
            return AttemptResult(AttemptKind.RETRYABLE, reason, status=status, congestion=status in self.congestion,
                                 retry_after_s=retry_after_s, policy_rps=policy_rps, detail=detail)
        if status in self.reject:
            return AttemptResult(AttemptKind.REJECTED, reason, status=status, policy_rps=policy_rps, detail=detail)
        why = "listed under status.stop" if status in self.stop else "in no status class (see status.*)"
        said = f"{detail}; " if detail else ""
        return AttemptResult(AttemptKind.STOP, reason, status=status, policy_rps=policy_rps,
                             detail=f"{said}status {status} is {why}")


DEFAULT_STATUS = StatusClasses()


def succeeded(value: Any, status: int | None = 200, policy_rps: float | None = None) -> AttemptResult:
    return AttemptResult(AttemptKind.SUCCESS, "ok", status=status, policy_rps=policy_rps, value=value)


def timed_out() -> AttemptResult:
    return AttemptResult(AttemptKind.RETRYABLE, "timeout", congestion=True)


def connection_refused(detail: str | None = None) -> AttemptResult:
    return AttemptResult(AttemptKind.RETRYABLE, "connection_error", congestion=True, detail=detail)


def stop(reason: str, detail: str, status: int | None = None) -> AttemptResult:
    return AttemptResult(AttemptKind.STOP, reason, status=status, detail=detail)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP-date (RFC 9110 10.2.3); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None   # NaN is no answer
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_POLICY_Q = re.compile(r"\bq=(\d+(?:\.\d+)?)")
_POLICY_W = re.compile(r"\bw=(\d+(?:\.\d+)?)")


def parse_policy_rps(value: str | None) -> float | None:
    """Requests/s from `RateLimit-Policy: "default";q=333;w=1` (draft-ietf-httpapi-ratelimit-headers)."""
    if not value:
        return None
    q, w = _POLICY_Q.search(value), _POLICY_W.search(value)
    if not q:
        return None
    window = float(w.group(1)) if w else 1.0
    return float(q.group(1)) / window if window > 0 else None
