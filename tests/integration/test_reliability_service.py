"""The scoring service fails: a 60 s outage (process down, connection refused) and a
capacity drop in overload mode (where rejections cost capacity: retry storms are metastable)."""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from pipelines.enrich_payments import run
from testbed.kafka.admin import consume_all
from testbed.kafka.produce import produce_events
from testbed.scoring.process import ScoringServiceProcess, service_args
from testbed.support.local_ports import free_ports
from tests.integration.reliability_support import JobProcess, fully_committed, job_args, make_topics, txn_ids, wait_for
from transforms.control.settings import DEFAULTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 60.0


def budget_bound(first_attempts: int, outage_s: float) -> float:
    """Failed attempts an outage can cost: the retry budget (full bucket + refill over the
    outage + what first attempts deposit) plus the first attempts of the batches that were
    outstanding (at most 2 x max_in_flight; `EnrichmentRuntime.submit` blocks beyond)."""
    cfg = DEFAULTS   # the job's throttle is built from these (transforms/control/factory.py)
    return (cfg.retry_budget_max_tokens + cfg.retry_budget_min_per_s * outage_s
            + cfg.retry_budget_ratio * first_attempts + cfg.outstanding_factor * cfg.max_in_flight)


def test_service_down_60s_then_back_on_same_port_loses_nothing_and_retries_within_budget(
        bootstrap_servers, tmp_path) -> None:
    port = free_ports(1)[0]
    topics = make_topics(bootstrap_servers, "outage")
    produced = produce_events(bootstrap_servers, topics.inp, count=4_000, seed=21)
    service = ScoringServiceProcess(service_args(rate=50), port=port).start()
    replacement = None
    try:
        job = JobProcess(job_args(bootstrap_servers, topics, service.url, "g-outage", "--batch_size=10"),
                         tmp_path, "outage")
        wait_for(lambda: service.stats()["accepted_requests"] >= 40, timeout=120,
                 what="the job to be scoring")
        service.stop()                                   # connection refused from here on
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)
        replacement = ScoringServiceProcess(service_args(rate=50), port=port).start()
        up_at = time.monotonic()
        assert replacement.url == service.url
        code = job.wait(timeout=400)
        done_at = time.monotonic()
        assert code == 0, job.stderr_tail()
    finally:
        service.stop()
        if replacement is not None:
            replacement.stop()

    summary = job.summary()
    counters = summary["counters"]
    refused = counters.get("enrich/requests_connection_error", 0) + counters.get("enrich/requests_timeout", 0)
    batches = counters["enrich/batches"]
    bound = budget_bound(batches, up_at - down_at)
    print(f"\noutage {up_at - down_at:.1f} s: {refused} failed attempts (bound {bound:.0f}), "
          f"{batches} batches, recovered {done_at - up_at:.1f} s after the service came back")
    assert refused > 0                                   # the outage really hit the job
    assert refused <= bound
    assert counters.get("enrich/score_dead_letters", 0) == 0
    assert consume_all(bootstrap_servers, topics.dlq, timeout=10) == []
    assert set(txn_ids(bootstrap_servers, topics.out)) == set(produced.txn_ids)
    assert fully_committed(bootstrap_servers, "g-outage", topics.inp)


# ---- metastability ---------------------------------------------------------------------

RATE = 100            # requests/s the service admits
FAULT = dict(kind="capacity", factor=0.2, duration_s=8.0)


def naive_goodput(url: str, seconds: float, fault_at: float, arrivals_per_s: float = 0.8 * RATE) -> dict:
    """Open-loop arrivals below capacity, unbounded concurrency, immediate retries until accepted
    (up to 50 attempts): accepted requests/s per phase (before / after the capacity drop)."""
    accepted, attempts = Counter(), Counter()
    stop = threading.Event()
    started = time.monotonic()
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=256, max_retries=0))

    def phase() -> str:
        t = time.monotonic() - started
        return "before" if t < fault_at else "during" if t < fault_at + FAULT["duration_s"] else "after"

    def call() -> None:
        batch = [{"txn_id": uuid.uuid4().hex} for _ in range(10)]
        for _ in range(50):
            if stop.is_set():
                return
            try:
                status = session.post(url + "/score", json=batch, timeout=5).status_code
            except requests.RequestException:
                status = None
            p = phase()
            attempts[p] += 1
            if status == 200:
                accepted[p] += 1
                return

    with ThreadPoolExecutor(256) as pool:
        n = 0
        while time.monotonic() - started < seconds:
            n += 1
            pool.submit(call)
            time.sleep(max(0.0, started + n / arrivals_per_s - time.monotonic()))
        stop.set()
    after_s = seconds - fault_at - FAULT["duration_s"]
    return dict(before=accepted["before"] / fault_at, after=accepted["after"] / after_s,
                attempts_after=attempts["after"] / after_s)


def test_capacity_drop_in_overload_mode_our_client_recovers(
        bootstrap_servers, kafka_topic, scoring_service_factory) -> None:
    # Ours: the real pipeline through a capacity drop to 20 % for 8 s.
    service = scoring_service_factory(rate=RATE, overload_mode=True)
    topics = {"in": kafka_topic(prefix="meta-in"), "out": kafka_topic(2, "meta-out"),
              "dlq": kafka_topic(1, "meta-dlq")}
    produced = produce_events(bootstrap_servers, topics["in"], count=3_000, seed=22)
    threading.Timer(3.0, lambda: service.fault(**FAULT)).start()
    summary = run(["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner",
                   f"--bootstrap_servers={bootstrap_servers}", f"--input_topic={topics['in']}",
                   f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}",
                   "--group_id=g-meta", f"--service_url={service.url}/score", "--batch_size=10",
                   "--progress_interval=0"])
    stats = service.stats()
    batches = summary.counter("batches")
    retries = summary.attempts - batches
    print(f"\nours: {summary.counter('events_scored')} scored in {summary.wall_s:.1f} s, "
          f"{summary.attempts / batches:.3f} attempts/batch, 429s {summary.counter('requests', outcome='429')}, "
          f"service rejected {stats['rejected']}")
    assert summary.counter("events_scored") == len(produced.txn_ids)
    assert summary.counter("score_dead_letters") == 0
    # Retries never exceed what the budget lets through: full bucket + ratio x first tries + refill.
    assert retries <= (DEFAULTS.retry_budget_max_tokens + DEFAULTS.retry_budget_ratio * batches
                       + DEFAULTS.retry_budget_min_per_s * summary.wall_s)
    assert fully_committed(bootstrap_servers, "g-meta", topics["in"])

    # The naive client against a fresh service with the same fault: shown, not asserted.
    naive_service = scoring_service_factory(rate=RATE, overload_mode=True)
    threading.Timer(4.0, lambda: naive_service.fault(**FAULT)).start()
    naive = naive_goodput(naive_service.url, seconds=24.0, fault_at=4.0)
    print(f"naive ({0.8 * RATE:.0f} new batches/s): goodput {naive['before']:.0f} req/s before the drop, {naive['after']:.0f} req/s after "
          f"it ended (capacity {RATE}), offered {naive['attempts_after']:.0f} attempts/s after")
