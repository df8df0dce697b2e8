"""`HttpJsonCaller` against a throwaway local HTTP server that answers with scripted responses (no
network needed): header parsing, what each status and body becomes, what the request carries,
credentials rotated on disk, names that do not resolve, redirects that are not followed."""
from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from transforms.contract.codec import Codec
from transforms.contract.http import HttpJsonCaller
from transforms.contract.loader import DEFAULT_CONTRACT, Contract, parse_contract
from transforms.contract.schema import Event
from transforms.control.signals import AttemptKind, AttemptResult, ElementFailure, parse_policy_rps, parse_retry_after

GOOD = dict(txn_id="t-1", account_id="acct-1", card_id="card-1", merchant="m-1", amount=12.5,
            currency="EUR", event_time="2026-11-26T19:00:00.123Z")
PAYMENTS_DOC = yaml.safe_load(DEFAULT_CONTRACT.read_text(encoding="utf-8"))


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 25 <= parse_retry_after(format_datetime(when, usegmt=True)) <= 31
    assert parse_retry_after(format_datetime(when - timedelta(hours=1), usegmt=True)) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_ratelimit_policy_gives_requests_per_second() -> None:
    assert parse_policy_rps('"default";q=333;w=1') == 333.0
    assert parse_policy_rps('"default";q=600;w=60') == 10.0
    assert parse_policy_rps('"default";q=50') == 50.0
    assert parse_policy_rps('"default";q=5;w=0') is None
    assert parse_policy_rps("garbage") is None
    assert parse_policy_rps(None) is None


# ---- the scripted server -------------------------------------------------------------------

Reply = tuple[int, dict[str, str], bytes]


class Server:
    """Answers each request with the next entry of `script` - a reply, or a function of the request
    that makes one - and keeps what it was sent in `seen`: (method, path, headers, body)."""

    def __init__(self) -> None:
        self.script: list[Reply | Callable[[], Reply]] = []
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append((self.command, self.path, dict(self.headers), body))
                entry = server.script.pop(0) if server.script else (599, {}, b"script exhausted")
                status, headers, payload = entry() if callable(entry) else entry
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:   # a larger one in the script: the body is cut short
                    self.send_header("Content-Length", str(len(payload)))
                else:
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_GET = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass   # a client that hung up mid-body (the size bound) is expected here

        self._http = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_port}"
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCORING_TOKEN", raising=False)


def payments(url: str, auth: dict[str, Any] | None = None, **service: Any) -> Contract:
    doc = copy.deepcopy(PAYMENTS_DOC)
    doc["service"].update(url=url, **service)
    if auth is not None:
        doc["service"]["auth"] = auth
    return parse_contract(doc, "payments.yaml")


def orders(url: str) -> Contract:
    """Another contract: an integer id, a wrapped request, results at data.matches matched by id."""
    return parse_contract({
        "event": {"id": "order_no", "fields": {"order_no": {"type": "integer"}, "store": {"type": "string"}}},
        "service": {"url": url, "method": "put", "headers": {"X-Tenant": "shop-7"}},
        "request": {"fields": {"order_no": "id", "store": "shop"}, "wrap": "batch.items", "static": {"model": "v2"}},
        "response": {"results": "data.matches", "match": "id", "id": "id",
                     "fields": {"risk": {"type": "number"}, "label": {"type": "string", "as": "risk_label"}}},
    }, "orders.yaml")


def events(*ids: str) -> list[Event]:
    schema = parse_contract(PAYMENTS_DOC).schema
    return [schema.event(dict(GOOD, txn_id=i)) for i in ids]


def ok_body(*ids: str) -> bytes:
    return json.dumps({"results": [{"txn_id": i, "score": 0.1, "decision": "approve"} for i in ids]}).encode()


def attempts(contract: Contract, batches: Sequence[Sequence[Any]]) -> list[AttemptResult]:
    """One caller, opened, called once per batch in turn and closed, on one event loop (as the runtime does)."""
    async def run() -> list[AttemptResult]:
        caller = HttpJsonCaller(contract)
        await caller.open()
        try:
            return [await caller.call(batch) for batch in batches]
        finally:
            await caller.close()
    return asyncio.run(run())


# ---- statuses and bodies ---------------------------------------------------------------------

def test_classifies_statuses_by_the_default_classes(server: Server) -> None:
    server.script += [
        (200, {"RateLimit-Policy": '"default";q=50;w=1'}, ok_body("a", "b")),
        (429, {"Retry-After": "2", "RateLimit-Policy": '"default";q=600;w=60'}, b'{"error":"rate limited"}'),
        (500, {}, b"boom"),
        (503, {"Retry-After": format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)}, b""),
        (400, {}, b'{"error":"bad"}'),
        (401, {}, b""),
        (404, {}, b"no such path"),
        (422, {}, b""),
        (418, {}, b"teapot"),
    ]
    ok, throttled, error, unavailable, bad, unauthorized, missing, unprocessable, teapot = attempts(
        payments(server.url), [events("a", "b")] + [events("a")] * 8)
    assert (ok.kind, ok.reason, ok.status, ok.policy_rps) == (AttemptKind.SUCCESS, "ok", 200, 50.0)
    assert ok.value == [(0.1, "approve", ""), (0.1, "approve", "")]
    assert (throttled.kind, throttled.reason, throttled.status) == (AttemptKind.RETRYABLE, "http_429", 429)
    assert throttled.congestion and throttled.retry_after_s == 2.0 and throttled.policy_rps == 10.0
    assert (error.kind, error.reason, error.congestion, error.retry_after_s) == (AttemptKind.RETRYABLE, "http_500",
                                                                                 False, None)
    assert error.detail == "status 500: boom"
    assert unavailable.kind is AttemptKind.RETRYABLE and unavailable.congestion
    assert 50 <= unavailable.retry_after_s <= 61
    assert (bad.kind, bad.reason, bad.detail) == (AttemptKind.REJECTED, "http_400", 'status 400: {"error":"bad"}')
    assert (unprocessable.kind, unprocessable.reason) == (AttemptKind.REJECTED, "http_422")
    assert (unauthorized.kind, unauthorized.reason, unauthorized.status) == (AttemptKind.STOP, "http_401", 401)
    assert "no credential was sent ($SCORING_TOKEN is unset or empty)" in unauthorized.detail
    assert (missing.kind, missing.reason) == (AttemptKind.STOP, "http_404")
    assert "status 404: no such path" in missing.detail and "listed under status.stop" in missing.detail
    assert (teapot.kind, teapot.reason) == (AttemptKind.STOP, "http_418") and "in no status class" in teapot.detail
    assert len(server.seen) == 9


def test_a_redirect_is_not_followed(server: Server) -> None:
    server.script += [(302, {"Location": f"{server.url}/elsewhere"}, b""), (200, {}, ok_body("a"))]
    [redirect] = attempts(payments(server.url + "/score"), [events("a")])
    assert (redirect.kind, redirect.reason, redirect.status) == (AttemptKind.STOP, "http_302", 302)
    assert "in no status class" in redirect.detail
    assert [(method, path) for method, path, _, _ in server.seen] == [("POST", "/score")]


def test_a_body_cut_short_is_retried_and_a_wrong_but_whole_one_is_not(server: Server) -> None:
    whole = ok_body("a")
    server.script += [(200, {"Content-Length": str(len(whole))}, whole[:10]),   # the connection closes mid-body
                      (200, {}, whole[:10]),                                    # complete, but not JSON: truncated
                      (200, {}, ok_body("b")),                                  # complete JSON, another transaction
                      (200, {}, b'{"result": []}')]                             # complete JSON, another shape
    cut, truncated, wrong, shape = attempts(payments(server.url), [events("a")] * 4)
    assert (cut.kind, cut.reason, cut.status) == (AttemptKind.RETRYABLE, "response_cut", 200)
    assert (truncated.kind, truncated.reason) == (AttemptKind.RETRYABLE, "invalid_response")
    assert truncated.detail.startswith("response body is not JSON")
    assert (wrong.kind, wrong.reason, wrong.status) == (AttemptKind.REJECTED, "invalid_response", 200)
    assert wrong.detail == "result 0 is for txn_id 'b', not 'a'"
    assert (shape.kind, shape.reason, shape.detail) == (AttemptKind.REJECTED, "invalid_response",
                                                        "response has no $.results")


def test_a_response_over_the_bound_is_refused_not_read(server: Server) -> None:
    server.script += [(200, {}, b"x" * 5000), (200, {}, ok_body("a"))]
    doc = copy.deepcopy(PAYMENTS_DOC)
    doc["service"]["url"] = server.url
    doc["response"]["max_bytes"] = 1000
    too_large, ok = attempts(parse_contract(doc), [events("a"), events("a")])
    assert (too_large.kind, too_large.reason, too_large.status) == (AttemptKind.REJECTED, "response_too_large", 200)
    assert ok.kind is AttemptKind.SUCCESS   # the dropped connection costs nothing more


def test_a_garbled_success_body_is_an_attempt_result_not_an_exception(server: Server) -> None:
    """Bytes that are not UTF-8 in a result's string: like any body that is not JSON, an answer."""
    server.script.append((200, {}, b'{"results":[{"txn_id":"a","score":1,"decision":"\xff"}]}'))
    [garbled] = attempts(payments(server.url), [events("a")])
    assert (garbled.kind, garbled.reason) == (AttemptKind.RETRYABLE, "invalid_response")


def test_one_bad_or_missing_result_costs_only_its_element(server: Server) -> None:
    server.script.append((200, {}, json.dumps({"results": [
        {"txn_id": "a", "score": 0.5, "decision": "approve", "model_version": "m2"},
        {"txn_id": "b", "score": "high", "decision": "review"}]}).encode()))
    [partly] = attempts(payments(server.url), [events("a", "b")])
    assert partly.kind is AttemptKind.SUCCESS
    assert partly.value == [(0.5, "approve", "m2"),
                            ElementFailure("invalid_result", "result 1: field 'score' must be a number, got string")]

    contract = orders(server.url)
    batch = [contract.schema.event({"order_no": n, "store": "s"}) for n in (7, 8, 9)]
    server.script.append((200, {}, json.dumps({"data": {"matches": [
        {"id": 9, "risk": 0.9, "label": "high"}, {"id": "7", "risk": 0.1, "label": "low"}]}}).encode()))
    [matched] = attempts(contract, [batch])
    assert matched.kind is AttemptKind.SUCCESS
    assert matched.value == [(0.1, "low"), ElementFailure("missing_result", "the response has no result for id '8'"),
                             (0.9, "high")]
    method, _, headers, body = server.seen[-1]
    assert method == "PUT" and headers["X-Tenant"] == "shop-7"
    assert json.loads(body) == {"model": "v2", "batch": {"items": [{"id": 7, "shop": "s"}, {"id": 8, "shop": "s"},
                                                                   {"id": 9, "shop": "s"}]}}


# ---- what the request carries ----------------------------------------------------------------

def test_the_request_carries_the_events_the_idempotency_key_and_no_auth_when_none_is_set(server: Server) -> None:
    server.script += [(200, {}, ok_body("a", "b")), (200, {}, ok_body("a", "b"))]
    batch = events("a", "b")
    attempts(payments(server.url), [batch, batch])
    (method, path, headers, body), (_, _, again, _) = server.seen
    assert (method, path) == ("POST", "/")
    assert json.loads(body) == [dict(GOOD, txn_id="a"), dict(GOOD, txn_id="b")]
    assert headers["Idempotency-Key"] == Codec.idempotency_key(batch) == again["Idempotency-Key"]
    assert len(headers["Idempotency-Key"]) == 32
    assert Codec.idempotency_key(events("b", "a")) != headers["Idempotency-Key"]
    assert headers["Content-Type"] == "application/json" and headers["Accept"] == "application/json"
    assert headers["User-Agent"] == f"throttled-enrichment pid/{os.getpid()}"
    assert "Authorization" not in headers   # the payment contract's token is optional: unset, none is sent


def test_a_bearer_token_from_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORING_TOKEN", "s3cret")
    server.script.append((200, {}, ok_body("a")))
    attempts(payments(server.url), [events("a")])
    assert server.seen[0][2]["Authorization"] == "Bearer s3cret"


def test_basic_auth(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVC_PASSWORD", "pa:ss")
    server.script.append((200, {}, ok_body("a")))
    attempts(payments(server.url, {"type": "basic", "username": "svc", "env": "SVC_PASSWORD"}), [events("a")])
    assert server.seen[0][2]["Authorization"] == "Basic " + base64.b64encode(b"svc:pa:ss").decode()


def test_a_named_header_from_a_file(server: Server, tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("k-123\n", encoding="utf-8")
    server.script.append((200, {}, ok_body("a")))
    attempts(payments(server.url, {"type": "header", "header": "X-API-Key", "file": str(key_file)}), [events("a")])
    headers = server.seen[0][2]
    assert headers["X-API-Key"] == "k-123" and "Authorization" not in headers


def test_a_credential_rotated_on_disk_is_retried_with(server: Server, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old", encoding="utf-8")

    def rotate() -> Reply:
        """Kubernetes' way: the new file is swapped in while the old token is being refused."""
        fresh = tmp_path / "token.new"
        fresh.write_text("new-token", encoding="utf-8")
        os.replace(fresh, token)
        return 401, {}, b'{"error":"token expired"}'

    server.script += [rotate, (200, {}, ok_body("a")), (401, {}, b"")]
    rotated, ok, refused = attempts(payments(server.url, {"type": "bearer", "file": str(token)}), [events("a")] * 3)
    assert (rotated.kind, rotated.reason, rotated.status) == (AttemptKind.RETRYABLE, "credentials_rotated", 401)
    assert ok.kind is AttemptKind.SUCCESS
    assert [h["Authorization"] for _, _, h, _ in server.seen] == ["Bearer old", "Bearer new-token", "Bearer new-token"]
    assert (refused.kind, refused.reason) == (AttemptKind.STOP, "http_401")   # refused, and nothing changed
    assert f"the credential in file {token} was refused" in refused.detail


# ---- no answer at all ------------------------------------------------------------------------

def test_a_name_that_does_not_resolve_stops_the_job() -> None:
    [result] = attempts(payments("http://scoring.invalid/score"), [events("a")])
    assert (result.kind, result.reason, result.status) == (AttemptKind.STOP, "dns_not_found", None)
    assert "the host of http://scoring.invalid/score does not resolve" in result.detail


def test_connection_refused_is_retryable_congestion() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed below: nothing listens there
    [result] = attempts(payments(f"http://127.0.0.1:{port}/", connect_timeout_s=1), [events("a")])
    assert (result.kind, result.reason, result.status) == (AttemptKind.RETRYABLE, "connection_error", None)
    assert result.congestion
