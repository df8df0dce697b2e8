"""What one attempt at the scoring service told us, and how an HTTP answer maps onto it."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

#: Worth retrying: rate limited, bad gateway, unavailable, gateway timeout.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
#: Of those, the ones that say the service is overloaded (a 502 says a proxy failed).
CONGESTION_STATUS = frozenset({429, 503, 504})


class AttemptKind(enum.Enum):
    SUCCESS = "success"
    RETRYABLE = "retryable"   # 429, 502, 503, 504, connection errors, timeouts
    FATAL = "fatal"           # any other client error: retrying cannot help


@dataclass(frozen=True)
class AttemptResult:
    kind: AttemptKind
    reason: str                       # "ok", "http_429", "http_503", "timeout", "connection_error", "http_400" ...
    status: int | None = None         # HTTP status, None when no response arrived
    congestion: bool = False          # the service signalled overload (429/503/504/timeout/refused)
    retry_after_s: float | None = None
    policy_rps: float | None = None   # rate advertised by RateLimit-Policy, if any
    value: Any = None                 # the parsed response body on success


def classify_status(status: int, retry_after_s: float | None = None, policy_rps: float | None = None,
                    value: Any = None) -> AttemptResult:
    """An HTTP answer as the throttle sees it (a 200 here has a valid body)."""
    if status == 200:
        return AttemptResult(AttemptKind.SUCCESS, "ok", status=200, policy_rps=policy_rps, value=value)
    if status in RETRYABLE_STATUS:
        return AttemptResult(AttemptKind.RETRYABLE, f"http_{status}", status=status,
                             congestion=status in CONGESTION_STATUS, retry_after_s=retry_after_s,
                             policy_rps=policy_rps)
    return AttemptResult(AttemptKind.FATAL, f"http_{status}", status=status, policy_rps=policy_rps)


def timed_out() -> AttemptResult:
    return AttemptResult(AttemptKind.RETRYABLE, "timeout", congestion=True)


def connection_refused() -> AttemptResult:
    return AttemptResult(AttemptKind.RETRYABLE, "connection_error", congestion=True)
