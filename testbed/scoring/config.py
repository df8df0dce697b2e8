"""Command-line flags and live settings of the scoring service.

Every limit is checked by one rule table, used both at start-up (bad flag ->
one stderr line, exit 2) and by ``POST /admin/config`` (bad value -> 400), so
the service can never run with a setting its start-up would have refused.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from testbed.scoring.faults import Fault, parse_faults

TOKEN_ENV = "SCORING_TOKEN"


class ConfigError(ValueError):
    """An impossible flag or setting (message is one line)."""


# name -> (type, minimum, maximum, minimum is exclusive)
_RULES: dict[str, tuple[type, float, float, bool]] = {
    "port": (int, 0, 65535, False),
    "rate": (float, 0, math.inf, True),
    "burst": (float, 1, math.inf, False),
    "max_batch": (int, 1, math.inf, False),
    "max_body_bytes": (int, 1, math.inf, False),
    "max_concurrency": (int, 1, math.inf, False),
    "queue_size": (int, 0, math.inf, False),
    "queue_timeout_ms": (float, 0, math.inf, False),
    "latency_ms": (float, 0, math.inf, False),
    "per_item_ms": (float, 0, math.inf, False),
    "jitter": (float, 0, 1, False),
    "reject_cost": (float, 0, math.inf, False),
    "hostile_every": (int, 0, math.inf, False),
}
LIVE_SETTINGS = (
    "rate", "burst", "max_concurrency", "queue_size", "queue_timeout_ms",
    "latency_ms", "per_item_ms", "jitter", "reject_cost",
)  # fmt: skip


def check(name: str, value: object) -> float | int:
    """Return ``value`` if it is allowed for setting ``name``, else raise ConfigError."""
    kind, low, high, exclusive = _RULES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number")
    if kind is int and value != int(value):
        raise ConfigError(f"{name} must be an integer")
    if value < low or (exclusive and value == low) or value > high:
        lower = f"> {low:g}" if exclusive else f">= {low:g}"
        upper = f" and <= {high:g}" if high != math.inf else ""
        raise ConfigError(f"{name} must be {lower}{upper}")
    return kind(value)


@dataclass
class Settings:
    """Effective configuration; the LIVE_SETTINGS fields may change at runtime."""

    host: str = "127.0.0.1"
    port: int = 8080
    rate: float = 333.0
    explicit_burst: float | None = None
    max_batch: int = 100
    max_body_bytes: int = 1 << 20
    max_concurrency: int = 64
    queue_size: int = 16
    queue_timeout_ms: float = 200.0
    latency_ms: float = 20.0
    per_item_ms: float = 0.2
    jitter: float = 0.2
    overload_mode: bool = False
    reject_cost: float = 0.5
    ratelimit_headers: bool = True
    seed: int | None = None
    hostile_every: int = 0
    token: str | None = field(default=None, repr=False)
    faults: list[Fault] = field(default_factory=list)

    @property
    def burst(self) -> float:
        """Bucket size: explicit, else a tenth of a second's worth of tokens (>= 1)."""
        if self.explicit_burst is not None:
            return self.explicit_burst
        return max(1.0, round(self.rate * 0.1, 6))

    def public(self) -> dict[str, Any]:
        """Settings as JSON for logs and /admin/config (never the token)."""
        live = {name: getattr(self, name) for name in LIVE_SETTINGS}
        return {
            **live,
            "max_batch": self.max_batch,
            "max_body_bytes": self.max_body_bytes,
            "overload_mode": self.overload_mode,
            "ratelimit_headers": self.ratelimit_headers,
            "auth": self.token is not None,
        }

    def validated_update(self, changes: object) -> dict[str, float | int]:
        """Check a /admin/config body completely before anything is applied."""
        if not isinstance(changes, dict) or not changes:
            raise ConfigError(f"config must be a non-empty JSON object with keys from: {', '.join(LIVE_SETTINGS)}")
        unknown = set(changes) - set(LIVE_SETTINGS)
        if unknown:
            raise ConfigError(f"not a live setting: {', '.join(sorted(unknown))}")
        return {name: check(name, value) for name, value in changes.items()}

    def apply(self, changes: dict[str, float | int]) -> None:
        for name, value in changes.items():
            setattr(self, "explicit_burst" if name == "burst" else name, value)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus a message; the brief wants exactly one line."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(" ".join(message.split()))


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="python -m testbed.scoring",
        description="Local capacity-limited fraud-scoring HTTP service.",
        allow_abbrev=False,
    )
    add = p.add_argument
    add("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    add("--port", type=int, default=8080, help="TCP port, 0 picks a free one (default 8080)")
    add("--rate", type=float, default=333.0, help="token-bucket rate, requests/s (default 333)")
    add("--burst", type=float, help="bucket size in requests (default max(1, rate x 0.1))")
    add("--max-batch", type=int, default=100, help="most transactions per request (default 100)")
    add("--max-body-bytes", type=int, default=1 << 20, help="largest body, else 413 (default 1 MiB)")
    add("--max-concurrency", type=int, default=64, help="requests processed at once (default 64)")
    add("--queue-size", type=int, default=16, help="requests waiting for a slot (default 16)")
    add("--queue-timeout-ms", type=float, default=200.0, help="longest wait for a slot (default 200)")
    add("--latency-ms", type=float, default=20.0, help="base latency per request (default 20)")
    add("--per-item-ms", type=float, default=0.2, help="extra latency per transaction (default 0.2)")
    add("--jitter", type=float, default=0.2, help="latency x (1 +/- uniform jitter) (default 0.2)")
    add("--faults", help="JSON list of faults, or @FILE holding it (times from service start)")
    add("--overload-mode", action="store_true", help="rejections also spend tokens (retry storms)")
    add("--reject-cost", type=float, default=0.5, help="tokens a rejection costs in overload mode (default 0.5)")
    add("--no-ratelimit-headers", action="store_true", help="omit RateLimit/RateLimit-Policy headers")
    add("--token-file", help=f"require 'Authorization: Bearer <token in file>' (or set ${TOKEN_ENV})")
    add("--seed", type=int, help="seed for the latency jitter")
    add("--hostile-every", type=int, default=0,
        help="malform every N-th 200 answer, cycling through testbed/scoring/hostile.py's shapes (default 0: off)")
    return p


def _load_faults(raw: str | None) -> list[Fault]:
    if raw is None:
        return []
    try:
        text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
        return parse_faults(json.loads(text))
    except OSError as exc:
        raise ConfigError(f"--faults: cannot read {raw[1:]}: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:  # json errors and FaultError are ValueErrors
        raise ConfigError(f"--faults: {' '.join(str(exc).split())}") from None


def _load_token(path: str | None) -> str | None:
    if path is None:
        return os.environ.get(TOKEN_ENV) or None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-file: cannot read {path}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"--token-file: {path} is empty")
    return token


def parse_settings(argv: list[str]) -> Settings:
    """Flags -> Settings, or ConfigError with a one-line reason."""
    ns = _parser().parse_args(argv)
    for name in _RULES:
        value = getattr(ns, name)
        if value is not None:
            check(name, value)
    return Settings(
        host=ns.host,
        port=ns.port,
        rate=ns.rate,
        explicit_burst=ns.burst,
        max_batch=ns.max_batch,
        max_body_bytes=ns.max_body_bytes,
        max_concurrency=ns.max_concurrency,
        queue_size=ns.queue_size,
        queue_timeout_ms=ns.queue_timeout_ms,
        latency_ms=ns.latency_ms,
        per_item_ms=ns.per_item_ms,
        jitter=ns.jitter,
        overload_mode=ns.overload_mode,
        reject_cost=ns.reject_cost,
        ratelimit_headers=not ns.no_ratelimit_headers,
        seed=ns.seed,
        hostile_every=ns.hostile_every,
        token=_load_token(ns.token_file),
        faults=_load_faults(ns.faults),
    )
