"""HTTP layer: the /score admission sequence, stats and admin endpoints.

/score checks, in order: auth (401), body size (413), body shape (400), outage
(503), token bucket (429), concurrency slot (503), then sleeps the modelled
latency while holding the slot. See testbed/scoring/__main__.py for the model.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from aiohttp import web

from testbed.scoring.admission import ConcurrencyGate
from testbed.scoring.body import BadRequest, parse_batch
from testbed.scoring.bucket import TokenBucket
from testbed.scoring.config import ConfigError, Settings
from testbed.scoring.faults import FaultError, FaultSchedule, parse_fault
from testbed.scoring.hostile import middlewares
from testbed.scoring.model import MODEL_VERSION, score_txn
from testbed.scoring.stats import Stats

_REASON_TEXT = {
    "unauthorized": "missing or wrong bearer token",
    "rate_limit": "rate limited",
    "concurrency": "too many concurrent requests",
    "outage": "service outage",
}


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _results_json(txn_ids: list[str]) -> bytes:
    """The 200 body, hand-assembled: about a third cheaper than dicts + json.dumps at
    100 items, which is what keeps batch-100 throughput above 1,500 requests/s."""
    items = []
    for txn_id in txn_ids:
        score, decision = score_txn(txn_id)
        items.append(
            f'{{"txn_id":{_json_str(txn_id)},"score":{score!r},"decision":"{decision}",'
            f'"model_version":"{MODEL_VERSION}"}}'
        )
    return ('{"results":[' + ",".join(items) + "]}").encode()


def _unauthorized() -> web.Response:
    """401 for the non-/score endpoints (not counted: stats count /score outcomes only)."""
    return _json(401, {"error": _REASON_TEXT["unauthorized"]})


def ratelimit_policy(rate: float) -> str:
    """``RateLimit-Policy`` value; a sub-1/s rate is expressed as 1 per longer window."""
    quota, window = (round(rate), 1) if rate >= 1 else (1, round(1 / rate))
    return f'"default";q={quota};w={window}'


class ScoringService:
    """State of one service process; handlers are bound methods registered in :meth:`app`."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.started = clock()
        self.bucket = TokenBucket(settings.burst, self.started)
        self.gate = ConcurrencyGate(
            settings.max_concurrency, settings.queue_size, settings.queue_timeout_ms / 1000
        )
        self.faults = FaultSchedule()
        self.stats = Stats()
        self._rng = random.Random(settings.seed)
        self._auth = None if settings.token is None else f"Bearer {settings.token}".encode()

    def start_clock(self) -> None:
        """Call when listening: uptime and the --faults windows count from here."""
        self.started = self._clock()
        for fault in self.settings.faults:
            self.faults.add(fault, self.started)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes,
                              middlewares=middlewares(self.settings.hostile_every))
        app.add_routes([
            web.post("/score", self.score),
            web.get("/healthz", self.healthz),
            web.get("/stats", self.stats_handler),
            web.get("/stats/txns", self.txns_handler),
            web.post("/admin/fault", self.fault_handler),
            web.get("/admin/config", self.config_handler),
            web.post("/admin/config", self.config_handler),
            web.post("/admin/reset", self.reset_handler),
        ])  # fmt: skip
        return app

    # ---- helpers -------------------------------------------------------------

    def _denied(self, request: web.Request) -> bool:
        if self._auth is None:
            return False
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        return not hmac.compare_digest(given, self._auth)

    def _reject(
        self, reason: str, status: int, text: str | None = None, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.stats.reject(reason)
        return _json(status, {"error": text or _REASON_TEXT[reason], "reason": reason}, headers)

    def _effective_rate(self, now: float) -> float:
        return self.settings.rate * self.faults.state(now).capacity_factor

    def _ratelimit_headers(self, rate: float) -> dict[str, str]:
        if not self.settings.ratelimit_headers:
            return {}
        wait = math.ceil(self.bucket.seconds_until_token(rate))
        return {
            "RateLimit-Policy": ratelimit_policy(rate),
            "RateLimit": f'"default";r={self.bucket.remaining()};t={wait}',
        }

    def _latency_s(self, items: int, factor: float) -> float:
        s = self.settings
        base = (s.latency_ms + s.per_item_ms * items) * factor
        return base * self._rng.uniform(1 - s.jitter, 1 + s.jitter) / 1000

    async def _json_body(self, request: web.Request) -> object:
        try:
            return json.loads(await request.read())
        except (ValueError, RecursionError):
            raise BadRequest("body is not valid JSON") from None

    # ---- /score ---------------------------------------------------------------

    async def score(self, request: web.Request) -> web.Response:
        """Admit or reject one batch; every outcome is counted (attempted = accepted + rejected).

        The Idempotency-Key is recorded before the body is judged, so a client
        re-sending a rejected batch under the same key shows up as a duplicate.
        """
        arrived = self._clock()
        s, stats, bucket = self.settings, self.stats, self.bucket
        stats.attempted_requests += 1
        if self._denied(request):
            return self._reject("unauthorized", 401)
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            stats.record_key(key)
        try:
            txn_ids = parse_batch(await request.read(), s.max_batch)
        except web.HTTPRequestEntityTooLarge:
            return self._reject("too_large", 413, f"body larger than {s.max_body_bytes} bytes")
        except BadRequest as exc:
            return self._reject("bad_request", 400, str(exc))
        stats.record_attempt(txn_ids)

        now = self._clock()
        fault = self.faults.state(now)
        if fault.outage_remaining_s > 0:
            retry = str(max(1, math.ceil(fault.outage_remaining_s)))
            return self._reject("outage", 503, headers={"Retry-After": retry})
        rate = s.rate * fault.capacity_factor
        penalty_floor = -bucket.burst
        if not bucket.try_take(now, rate):
            if s.overload_mode:
                bucket.charge(s.reject_cost, penalty_floor)
            retry = str(max(1, math.ceil(bucket.seconds_until_token(rate))))
            headers = {"Retry-After": retry, **self._ratelimit_headers(rate)}
            return self._reject("rate_limit", 429, headers=headers)
        limit_headers = self._ratelimit_headers(rate)
        if not await self.gate.acquire():
            bucket.refund(1.0)
            if s.overload_mode:
                bucket.charge(s.reject_cost, penalty_floor)
            return self._reject("concurrency", 503, headers={"Retry-After": "1"})
        try:
            await asyncio.sleep(self._latency_s(len(txn_ids), fault.latency_factor))
        finally:
            self.gate.release()
        body = _results_json(txn_ids)
        stats.record_accepted(txn_ids, (self._clock() - arrived) * 1000, request.headers.get("User-Agent", ""))
        return web.Response(body=body, content_type="application/json", headers=limit_headers)

    # ---- observability ----------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def stats_handler(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return _unauthorized()
        now = self._clock()
        return _json(200, {
            **self.stats.snapshot(),
            "peak_concurrency": self.gate.peak,
            "current_concurrency": self.gate.active,
            "queued": self.gate.queued,
            "capacity_rps": self._effective_rate(now),
            "active_faults": self.faults.describe(now),
            "uptime_s": round(now - self.started, 3),
        })  # fmt: skip

    async def txns_handler(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return _unauthorized()
        return _json(200, {"attempts": self.stats.txn_attempts()})

    # ---- admin ------------------------------------------------------------------

    async def fault_handler(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return _unauthorized()
        try:
            fault = parse_fault(await self._json_body(request))
        except (BadRequest, FaultError) as exc:
            return _json(400, {"error": str(exc)})
        now = self._clock()
        self.bucket.refill(now, self._effective_rate(now))  # a capacity fault must not re-price the past
        self.faults.add(fault, now)
        return _json(200, {"scheduled": asdict(fault), "active_faults": self.faults.describe(now)})

    async def config_handler(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return _unauthorized()
        if request.method == "POST":
            try:
                changes = self.settings.validated_update(await self._json_body(request))
            except (BadRequest, ConfigError) as exc:
                return _json(400, {"error": str(exc)})
            self._apply(changes)
        return _json(200, {"config": self.settings.public()})

    def _apply(self, changes: dict[str, Any]) -> None:
        s, now = self.settings, self._clock()
        self.bucket.refill(now, self._effective_rate(now))  # bank the elapsed time at the old rate
        s.apply(changes)
        self.bucket.set_burst(s.burst)
        self.gate.queue_size = s.queue_size
        self.gate.timeout_s = s.queue_timeout_ms / 1000
        self.gate.set_limit(s.max_concurrency)

    async def reset_handler(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return _unauthorized()
        self.stats.reset()
        self.gate.peak = self.gate.active
        return _json(200, {"reset": True})
