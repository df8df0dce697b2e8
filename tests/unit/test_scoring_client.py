"""Header parsing and response classification of the scoring client (no network needed:
a throwaway local HTTP server answers with scripted responses)."""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from transforms.control.signals import AttemptKind, AttemptResult
from transforms.scoring.client import ScoringClient, parse_policy_rps, parse_retry_after


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 25 <= parse_retry_after(format_datetime(when, usegmt=True)) <= 31


def test_ratelimit_policy_gives_requests_per_second() -> None:
    assert parse_policy_rps('"default";q=333;w=1') == 333.0
    assert parse_policy_rps('"default";q=600;w=60') == 10.0
    assert parse_policy_rps("garbage") is None


Script = list[tuple[int, dict, bytes]]


@pytest.fixture
def scripted_server() -> Iterator[tuple[str, Script, list]]:
    script: Script = []
    seen: list = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((dict(self.headers), body))
            status, headers, payload = script.pop(0)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:   # a larger one in the script: the body is cut short
                self.send_header("Content-Length", str(len(payload)))
            else:
                self.close_connection = True
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", script, seen
    server.shutdown()


def ok_body(ids) -> bytes:
    return json.dumps({"results": [{"txn_id": i, "score": 0.1, "decision": "approve"} for i in ids]}).encode()


def attempts(url: str, calls: list[tuple[list[str], str]], **client_kwargs) -> list[AttemptResult]:
    """Runs `client.attempt(b"[]", txn_ids, key)` for each call on one event loop, as the runtime does."""
    async def run() -> list[AttemptResult]:
        client = ScoringClient(url, **client_kwargs)
        try:
            return [await client.attempt(b"[]", ids, key) for ids, key in calls]
        finally:
            await client.close()
    return asyncio.run(run())


def test_classifies_responses(scripted_server) -> None:
    url, script, seen = scripted_server
    script += [
        (200, {"RateLimit-Policy": '"default";q=50;w=1'}, ok_body(["a", "b"])),
        (429, {"Retry-After": "2"}, b'{"error":"rate limited"}'),
        (503, {}, b""),
        (400, {}, b'{"error":"bad"}'),
        (200, {}, ok_body(["b", "a"])),
        (302, {"Location": "http://elsewhere.example/"}, b""),
    ]
    ok, throttled, unavailable, bad, mismatch, redirect = attempts(
        url, [(["a", "b"], "key-1"), (["a"], "key-2"), (["a"], "k"), (["a"], "k"), (["a", "b"], "k"), (["a"], "k")],
        token="s3cret")
    assert ok.kind is AttemptKind.SUCCESS and ok.policy_rps == 50 and len(ok.value) == 2
    assert throttled.kind is AttemptKind.RETRYABLE and throttled.congestion and throttled.retry_after_s == 2
    assert unavailable.reason == "http_503"
    assert bad.kind is AttemptKind.FATAL
    assert mismatch.kind is AttemptKind.FATAL and mismatch.reason.startswith("invalid_response: result 0 is for txn_id 'b'")
    assert redirect.kind is AttemptKind.FATAL and redirect.status == 302   # never followed
    headers, _ = seen[0]
    assert headers["Authorization"] == "Bearer s3cret" and headers["Idempotency-Key"] == "key-1"
    assert headers["User-Agent"].startswith("payment-enrichment pid/")
    assert len(seen) == 6


def test_connection_refused_is_retryable_congestion() -> None:
    [result] = attempts("http://127.0.0.1:9", [(["a"], "k")], connect_timeout_s=1)
    assert result.kind is AttemptKind.RETRYABLE and result.reason == "connection_error" and result.congestion


def test_a_response_over_the_bound_is_refused_not_read(scripted_server) -> None:
    url, script, _ = scripted_server
    script.append((200, {}, b"x" * 5000))
    [result] = attempts(url, [(["a"], "k")], max_response_bytes=1000)
    assert result.kind is AttemptKind.FATAL and result.reason == "response_too_large"


def test_a_body_cut_short_is_retried_and_a_wrong_but_whole_one_is_not(scripted_server) -> None:
    url, script, _ = scripted_server
    whole = ok_body(["a"])
    script += [(200, {"Content-Length": str(len(whole))}, whole[:10]),   # the connection closes mid-body
               (200, {}, whole[:10]),                                    # complete, but not JSON: truncated
               (200, {}, ok_body(["b"]))]                                # complete JSON, another transaction
    cut, truncated, wrong = attempts(url, [(["a"], "k")] * 3)
    assert (cut.kind, cut.reason, cut.status) == (AttemptKind.RETRYABLE, "response_cut", 200)
    assert truncated.kind is AttemptKind.RETRYABLE and truncated.reason.startswith("invalid_response: response body is not JSON")
    assert wrong.kind is AttemptKind.FATAL and wrong.status == 200
