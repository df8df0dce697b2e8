"""What one attempt at the scoring service told us."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class AttemptKind(enum.Enum):
    SUCCESS = "success"
    RETRYABLE = "retryable"   # 429, 502, 503, 504, connection errors, timeouts
    FATAL = "fatal"           # any other client error: retrying cannot help


@dataclass(frozen=True)
class AttemptResult:
    kind: AttemptKind
    reason: str                       # "ok", "http_429", "http_503", "timeout", "connection_error", "http_400" ...
    status: int | None = None      # HTTP status, None when no response arrived
    congestion: bool = False          # the service signalled overload (429/503/504/timeout)
    retry_after_s: float | None = None
    policy_rps: float | None = None  # rate advertised by RateLimit-Policy, if any
    value: Any = None                 # the parsed response body on success
