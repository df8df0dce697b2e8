"""The scoring service as a real process: the contract the pipeline's client relies on.

Timing assertions are one-sided bounds (a slow machine cannot make them fail
spuriously) or counts that the service must get exactly right.
"""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import aiohttp
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.scoring.model import MODEL_VERSION, score_txn
from testbed.scoring.process import ScoringServiceProcess

pytestmark = pytest.mark.integration
Factory = Callable[..., ScoringServiceProcess]
NO_LATENCY = {"latency_ms": 0, "per_item_ms": 0, "jitter": 0}
RATELIMIT = re.compile(r'^"default";r=(\d+);t=(\d+)$')


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: Any


def batch(*txn_ids: str) -> list[dict[str, Any]]:
    return [{"txn_id": t, "amount": 10.0} for t in txn_ids]


async def _post_all(url: str, bodies: Sequence[object], offsets: Sequence[float] | None) -> list[Reply]:
    """POST every body to /score at once, or each at its offset (s) from the start."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        start = time.monotonic()

        async def one(i: int, body: object) -> Reply:
            if offsets is not None:
                await asyncio.sleep(max(0.0, start + offsets[i] - time.monotonic()))
            async with session.post(url + "/score", json=body) as response:
                return Reply(response.status, dict(response.headers), await response.json())

        return list(await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies))))


def post_all(url: str, bodies: Sequence[object], offsets: Sequence[float] | None = None) -> list[Reply]:
    return asyncio.run(_post_all(url, bodies, offsets))


def wait_for_status(service: ScoringServiceProcess, status: int, timeout_s: float = 15.0) -> requests.Response:
    """Poll /score every 50 ms until it answers ``status``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = service.score(batch("poll"))
        if response.status_code == status:
            return response
        time.sleep(0.05)
    raise AssertionError(f"no {status} within {timeout_s} s")


# ---- the happy path -----------------------------------------------------------------------


def test_scores_are_deterministic_and_in_request_order(scoring_service: ScoringServiceProcess) -> None:
    ids = [f"det-{i}" for i in range(60)] + ["det-3", "ünïcødé-€", 'quote"and\\slash']
    response = scoring_service.score(batch(*ids))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["txn_id"] for r in results] == ids
    for r in results:
        assert (r["score"], r["decision"]) == score_txn(r["txn_id"])
        assert r["model_version"] == MODEL_VERSION
    assert response.headers["RateLimit-Policy"] == '"default";q=100000;w=1'
    assert RATELIMIT.match(response.headers["RateLimit"])
    assert scoring_service.score(batch(*ids)).json()["results"] == results


def test_health_and_clean_shutdown(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory()
    assert requests.get(service.url + "/healthz", timeout=10).status_code == 200
    assert service.stop() == 0  # SIGTERM -> clean exit


# ---- rate limit ---------------------------------------------------------------------------------


def test_burst_at_twice_the_rate_is_cut_to_the_token_bucket_bound(scoring_service_factory: Factory) -> None:
    rate, burst, n = 50, 5, 200
    service = scoring_service_factory(rate=rate, burst=burst, **NO_LATENCY)
    started = time.monotonic()
    replies = post_all(service.url, [batch(f"rl-{i}") for i in range(n)], [i / (2 * rate) for i in range(n)])
    elapsed = time.monotonic() - started

    statuses = Counter(r.status for r in replies)
    assert set(statuses) == {200, 429}
    assert statuses[200] <= rate * elapsed + burst + 1
    assert statuses[200] >= rate * elapsed * 0.5  # it limits, it does not collapse
    for r in replies:
        assert r.headers["RateLimit-Policy"] == f'"default";q={rate};w=1'
        remaining, wait = map(int, RATELIMIT.match(r.headers["RateLimit"]).groups())  # type: ignore[union-attr]
        assert remaining <= burst
        if r.status == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert (remaining, r.body) == (0, {"error": "rate limited", "reason": "rate_limit"})
            assert wait >= 1
    stats = service.stats()
    assert (stats["accepted_requests"], stats["rejected"]["rate_limit"]) == (statuses[200], statuses[429])
    assert stats["attempted_requests"] == n


def test_ratelimit_headers_can_be_turned_off(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(rate=1, burst=1, no_ratelimit_headers=True, **NO_LATENCY)
    ok, limited = service.score(batch("h1")), service.score(batch("h2"))
    assert (ok.status_code, limited.status_code) == (200, 429)
    assert "Retry-After" in limited.headers
    for response in (ok, limited):
        assert "RateLimit" not in response.headers and "RateLimit-Policy" not in response.headers


# ---- concurrency ------------------------------------------------------------------------------------


def test_peak_concurrency_never_exceeds_the_cap(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(
        rate=100_000, max_concurrency=8, queue_size=4, queue_timeout_ms=5000, latency_ms=200, jitter=0
    )
    replies = post_all(service.url, [batch(f"cc-{i}") for i in range(60)])
    statuses = Counter(r.status for r in replies)
    stats = service.stats()
    assert stats["peak_concurrency"] == 8
    assert stats["current_concurrency"] == 0
    assert statuses[200] == stats["accepted_requests"] >= 12
    assert statuses[503] == stats["rejected"]["concurrency"] > 0
    for r in replies:
        if r.status == 503:
            assert r.headers["Retry-After"] == "1"
            assert r.body["reason"] == "concurrency"


def test_queue_absorbs_its_size_then_overflows(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(
        rate=100_000, max_concurrency=2, queue_size=3, queue_timeout_ms=10_000, latency_ms=1000, jitter=0
    )
    statuses = Counter(r.status for r in post_all(service.url, [batch(f"q-{i}") for i in range(8)]))
    assert statuses == {200: 5, 503: 3}  # 2 running + 3 queued served; 3 refused at once
    assert service.stats()["peak_concurrency"] == 2


def test_queue_wait_is_bounded_by_the_queue_timeout(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(
        rate=100_000, max_concurrency=1, queue_size=1, queue_timeout_ms=100, latency_ms=1500, jitter=0
    )
    statuses = Counter(r.status for r in post_all(service.url, [batch(f"qt-{i}") for i in range(3)]))
    assert statuses == {200: 1, 503: 2}  # one overflowed, one timed out in the queue


def test_live_config_changes_the_limits(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(rate=100_000, **NO_LATENCY)
    config = service.configure(max_concurrency=1, queue_size=0, latency_ms=500, rate=2000)
    assert (config["max_concurrency"], config["queue_size"], config["latency_ms"]) == (1, 0, 500)
    assert service.stats()["capacity_rps"] == 2000
    statuses = Counter(r.status for r in post_all(service.url, [batch(f"lc-{i}") for i in range(3)]))
    assert statuses == {200: 1, 503: 2}
    bad = requests.post(service.url + "/admin/config", json={"max_concurrency": 0}, timeout=10)
    assert bad.status_code == 400 and "max_concurrency" in bad.json()["error"]


# ---- exact counters ----------------------------------------------------------------------------------


def test_stats_are_exact_for_a_scripted_sequence(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(token="t0ken", rate=0.01, burst=3, max_body_bytes=2000, **NO_LATENCY)
    key = {"Idempotency-Key": "k1"}
    assert service.score(batch("a", "b"), headers=key).status_code == 200
    assert service.score(batch("a"), headers=key).status_code == 200  # same key, a scored again
    assert service.score(batch("c")).status_code == 200  # bucket now empty
    assert service.score(batch("d", "a")).status_code == 429
    auth = {"Authorization": "Bearer t0ken"}
    assert requests.post(service.url + "/score", data=b"nope", headers=auth, timeout=10).status_code == 400
    assert requests.post(service.url + "/score", json=batch("x"), timeout=10).status_code == 401
    assert service.score([{"txn_id": "big", "pad": "x" * 3000}]).status_code == 413
    service.fault("outage", duration_s=60)
    assert service.score(batch("e")).status_code == 503

    stats = service.stats()
    expected = {
        "attempted_requests": 8,
        "attempted_items": 7,
        "accepted_requests": 3,
        "accepted_items": 4,
        "unique_txns": 3,
        "duplicate_txn_scores": 1,
        "duplicate_idempotency_keys": 1,
        "peak_concurrency": 1,
        "current_concurrency": 0,
        "rejected": {
            "rate_limit": 1, "concurrency": 0, "outage": 1,
            "bad_request": 1, "unauthorized": 1, "too_large": 1,
        },
    }  # fmt: skip
    assert {k: stats[k] for k in expected} == expected
    assert stats["accepted_requests"] + sum(stats["rejected"].values()) == stats["attempted_requests"]
    assert stats["latency_samples"] == 3 and stats["latency_p99_ms"] >= stats["latency_p50_ms"] >= 0
    assert [f["kind"] for f in stats["active_faults"]] == ["outage"]
    assert service.txn_attempts() == {"a": 3, "b": 1, "c": 1, "d": 1, "e": 1}

    service.reset()
    stats = service.stats()
    assert stats["attempted_requests"] == stats["accepted_requests"] == stats["unique_txns"] == 0
    assert sum(stats["rejected"].values()) == 0 and service.txn_attempts() == {}


# ---- faults ---------------------------------------------------------------------------------------


def test_outage_scheduled_by_flag_starts_and_ends(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(faults=[{"kind": "outage", "start_s": 2.0, "duration_s": 1.0}], **NO_LATENCY)
    assert service.score(batch("before")).status_code == 200
    down = wait_for_status(service, 503)
    down_at = time.monotonic()
    assert down.json()["reason"] == "outage"
    assert down.headers["Retry-After"] == "1"  # ceil of the <= 1 s left
    assert all(f["remaining_s"] <= 1.0 for f in service.stats()["active_faults"])
    wait_for_status(service, 200)
    assert time.monotonic() - down_at >= 0.5
    assert service.stats()["active_faults"] == []


def test_outage_via_admin_starts_now_and_ends(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(**NO_LATENCY)
    asked_at = time.monotonic()
    [active] = service.fault("outage", duration_s=1.0)
    assert active["kind"] == "outage"
    down = service.score(batch("during"))
    assert (down.status_code, down.headers["Retry-After"]) == (503, "1")
    wait_for_status(service, 200)
    assert time.monotonic() - asked_at >= 1.0
    assert service.stats()["rejected"]["outage"] >= 1


def test_refused_window_drops_connections_and_listens_again(scoring_service_factory: Factory) -> None:
    """A `refused` fault looks like a dead process: keep-alive connections die, new ones are refused."""
    service = scoring_service_factory(**NO_LATENCY)
    session = requests.Session()
    assert session.post(service.url + "/score", json=batch("before"), timeout=5).status_code == 200
    service.fault("refused", duration_s=1.0)
    time.sleep(0.2)
    with pytest.raises(requests.ConnectionError):
        session.post(service.url + "/score", json=batch("during"), timeout=5)   # the pooled connection
    with pytest.raises(requests.ConnectionError):
        requests.post(service.url + "/score", json=batch("during2"), timeout=5)   # a new one
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if requests.post(service.url + "/score", json=batch("after"), timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    else:
        pytest.fail("the service did not listen again after the refused window")
    assert service.stats()["unique_by_client"] and service.stats()["unique_txns"] == 2


def test_capacity_and_latency_faults_via_admin(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(rate=1000, latency_ms=100, per_item_ms=0, jitter=0)
    service.fault("capacity", duration_s=1.5, factor=0.25)
    service.fault("latency", duration_s=1.5, factor=4)
    assert service.stats()["capacity_rps"] == 250
    started = time.monotonic()
    assert service.score(batch("slow")).status_code == 200
    assert time.monotonic() - started >= 0.4  # 100 ms x 4
    time.sleep(1.6)
    stats = service.stats()
    assert (stats["capacity_rps"], stats["active_faults"]) == (1000, [])
    bad = requests.post(service.url + "/admin/fault", json={"kind": "flood", "duration_s": 1}, timeout=10)
    assert bad.status_code == 400 and "kind" in bad.json()["error"]


def _hammer(url: str, seconds: float, workers: int = 8) -> int:
    """Closed-loop clients that retry at once (no backoff); returns the 200s they got."""

    async def run() -> int:
        ok = 0
        until = time.monotonic() + seconds
        async with aiohttp.ClientSession() as session:

            async def worker() -> None:
                nonlocal ok
                while time.monotonic() < until:
                    async with session.post(url + "/score", json=batch("storm")) as response:
                        await response.read()
                        ok += response.status == 200

            await asyncio.gather(*(worker() for _ in range(workers)))
        return ok

    return asyncio.run(run())


def test_overload_mode_lets_retry_storms_eat_goodput_until_clients_back_off(scoring_service_factory: Factory) -> None:
    rate, burst, seconds = 50, 5, 2.0
    plain = scoring_service_factory(rate=rate, burst=burst, **NO_LATENCY)
    overload = scoring_service_factory(rate=rate, burst=burst, overload_mode=True, **NO_LATENCY)
    plain_ok = _hammer(plain.url, seconds)
    storm_ok = _hammer(overload.url, seconds)
    assert plain_ok >= rate * seconds * 0.5  # rejections are free: goodput stays near the rate
    assert storm_ok <= burst + rate * seconds * 0.25  # rejections spend tokens: goodput collapses
    assert storm_ok < plain_ok
    time.sleep(0.5)  # the clients back off ...
    replies = post_all(overload.url, [batch(f"calm-{i}") for i in range(10)], [i * 0.1 for i in range(10)])
    assert [r.status for r in replies] == [200] * 10  # ... and goodput recovers


# ---- bad input ----------------------------------------------------------------------------------------

MALFORMED: list[tuple[bytes, int, str]] = [
    (b"not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[" * 50_000 + b"]" * 50_000, 400, "not valid JSON"),
    (b'{"txn_id": "a"}', 400, "JSON array"),
    (b"[]", 400, "empty"),
    (b'[{"txn_id": "a"}, "b"]', 400, "item 1 is not a JSON object"),
    (b'[{"amount": 1}]', 400, "'txn_id'"),
    (b'[{"txn_id": 5}]', 400, "'txn_id'"),
    (b'[{"txn_id": "\\udc00"}]', 400, "not valid Unicode"),
    (json.dumps(batch(*map(str, range(101)))).encode(), 400, "more than the maximum 100"),
    (json.dumps(batch("x" * (1 << 20))).encode(), 413, "larger than 1048576 bytes"),
]


@pytest.mark.parametrize(("body", "status", "reason"), MALFORMED, ids=lambda v: repr(v)[:30])
def test_malformed_bodies_get_4xx_with_a_reason(
    scoring_service: ScoringServiceProcess, body: bytes, status: int, reason: str
) -> None:
    response = requests.post(scoring_service.url + "/score", data=body, timeout=30)
    assert response.status_code == status
    assert reason in response.json()["error"]


@settings(max_examples=60, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["txn_id", "x"]), inner),
            max_leaves=12,
        ).map(lambda doc: json.dumps(doc).encode()),
    )
)
def test_arbitrary_bodies_never_cause_a_server_error(scoring_service: ScoringServiceProcess, body: bytes) -> None:
    response = requests.post(scoring_service.url + "/score", data=body, timeout=30)
    assert response.status_code in (200, 400)
    assert ("results" if response.status_code == 200 else "error") in response.json()


def test_token_is_required_when_configured_and_never_logged(scoring_service_factory: Factory) -> None:
    service = scoring_service_factory(token="sup3r-s3cret", **NO_LATENCY)
    url = service.url + "/score"
    assert requests.post(url, json=batch("n"), timeout=10).status_code == 401
    wrong = requests.post(url, json=batch("n"), headers={"Authorization": "Bearer nope"}, timeout=10)
    assert (wrong.status_code, wrong.json()["reason"]) == (401, "unauthorized")
    assert requests.get(service.url + "/stats", timeout=10).status_code == 401
    assert service.score(batch("y")).status_code == 200  # the helper sends the token
    assert service.stats()["rejected"]["unauthorized"] == 2
    logs = [path.read_text() for path in service.log_dir.glob("scoring.*")]
    assert len(logs) == 2 and not any("sup3r-s3cret" in log for log in logs)


# ---- flags ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["--rate", "-5"],
        ["--max-concurrency", "0"],
        ["--max-batch", "0"],
        ["--faults", "{not json"],
        ["--faults", '[{"kind": "outage"}]'],
        ["--port", "-1"],
    ],
)
def test_bad_flags_exit_2_with_one_stderr_line(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "testbed.scoring", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scoring_service: error: ")
