"""The fleet quota against a real Redis: water-filling on the server, workers that come and go, and a
coordinator that dies and comes back (issue 29)."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

from testbed.kafka.admin import consume_all
from testbed.kafka.produce import produce_events
from tests.unit.fake_clock import FakeClock
from tests.unit.test_control import make_throttle
from transforms.control.lease import LeaseSettings, renewed_grant, water_fill
from transforms.quota.keeper import LeaseKeeper
from transforms.quota.redis_coordinator import CoordinatorUnavailable, QuotaCoordinatorConfig, RedisCoordinator

pytestmark = pytest.mark.integration

FNAPI = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def coordinators(url: str, name: str, n: int) -> list[RedisCoordinator]:
    return [RedisCoordinator(QuotaCoordinatorConfig(url, name), worker_id=f"w{i}") for i in range(n)]


def test_renewals_converge_to_fair_shares_and_the_grants_never_add_up_to_more_than_the_quota(redis_server) -> None:
    small, big, bigger = coordinators(redis_server.url, "api", 3)
    held: dict[str, float] = {}
    for _ in range(3):
        for worker, demand in ((small, 10), (big, 100), (bigger, 120)):
            grant = worker.renew(demand, 120, ttl_s=5)
            held[worker.worker_id] = grant.rps
            assert grant.workers == 3 or len(held) < 3
            assert sum(held.values()) <= 120 * (1 + 1e-6)            # at every moment, not only at the end
    assert held == pytest.approx({"w0": 10, "w1": 55, "w2": 55})      # 10 met in full, the rest halved
    other = coordinators(redis_server.url, "another-api", 1)[0]
    assert other.renew(500, 120, ttl_s=5).rps == pytest.approx(120)  # quotas by name do not mix


def test_a_worker_that_stops_renewing_drops_out_and_one_that_leaves_gives_its_share_back_at_once(redis_server) -> None:
    a, b, c = coordinators(redis_server.url, "api", 3)
    assert a.renew(100, 90, ttl_s=0.3).rps == pytest.approx(90)       # alone at first
    b.renew(100, 90, ttl_s=5)
    c.renew(100, 90, ttl_s=5)                                         # nothing free while a holds it all
    time.sleep(0.4)                                                   # a's lease expired (server clock)
    assert c.renew(100, 90, ttl_s=5).rps == pytest.approx(45)
    b.leave()
    grant = c.renew(100, 90, ttl_s=5)
    assert grant.workers == 1 and grant.rps == pytest.approx(90)


def test_losing_the_coordinator_decays_to_an_equal_share_and_never_fails_then_the_worker_rejoins(redis_server) -> None:
    settings = LeaseSettings(quota_rps=100, renew_s=0.1, ttl_s=1.0, decay_s=0.5, target_share=1.0)
    peers = coordinators(redis_server.url, "api", 3)
    for peer in peers:
        peer.renew(1, 100, ttl_s=30)                                  # three idle workers elsewhere
    throttle = make_throttle(FakeClock(), initial_rate=100, max_rate=1000)
    keeper = LeaseKeeper(RedisCoordinator(QuotaCoordinatorConfig(redis_server.url, "api", timeout_s=0.2)),
                         settings, throttle)
    throttle._started = 10_000                                        # it has been busy: it wants the quota
    keeper.renew_once()
    assert keeper.lease.ceiling() == pytest.approx(97) and throttle.pacer.rate == pytest.approx(97)
    redis_server.kill()
    keeper.renew_once()                                               # no exception: the job goes on
    assert not keeper.lease.connected and keeper.lease.ceiling() == pytest.approx(97, rel=0.1)
    time.sleep(0.6)
    keeper.renew_once()
    assert keeper.lease.ceiling() == pytest.approx(25)                # 100 / the 4 workers last seen
    assert throttle.pacer.rate == pytest.approx(25)
    redis_server.start()                                              # back, empty: the peers are gone
    throttle._started += 10_000
    keeper.renew_once()
    assert keeper.lease.connected and keeper.lease.ceiling() == pytest.approx(100)
    keeper.stop()


def test_an_unreachable_coordinator_is_one_clear_error() -> None:
    coordinator = RedisCoordinator(QuotaCoordinatorConfig("redis://127.0.0.1:1/0", "api", timeout_s=0.2))
    with pytest.raises(CoordinatorUnavailable, match="quota coordinator redis://127.0.0.1:1/0"):
        coordinator.renew(10, 100, ttl_s=1)


JOBS, EVENTS_PER_JOB, QUOTA_RPS = 3, 1_500, 40


def test_separate_jobs_share_one_quota_in_front_of_a_limiter_they_do_not_know(
        redis_server, bootstrap_servers, kafka_topic, nginx_limited, tmp_path) -> None:
    """Three jobs (separate processes) drain their own topics through nginx limit_req at QUOTA_RPS, sharing
    --quota_rps=QUOTA_RPS through Redis: nothing lost, and the limiter almost never has to refuse them."""
    url, _ = nginx_limited(QUOTA_RPS, burst=5)
    procs, topics = [], []
    for job in range(JOBS):
        t = {"in": kafka_topic(2, f"fq{job}-in"), "out": kafka_topic(1, f"fq{job}-out"),
             "dlq": kafka_topic(1, f"fq{job}-dlq")}
        produce_events(bootstrap_servers, t["in"], count=EVENTS_PER_JOB, seed=29 + job)
        topics.append(t)
    for job, t in enumerate(topics):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pipelines.enrich_payments", FNAPI, f"--bootstrap_servers={bootstrap_servers}",
             f"--input_topic={t['in']}", f"--output_topic={t['out']}", f"--dlq_topic={t['dlq']}",
             f"--group_id=g-fleet-{job}", f"--service_url={url}/score", "--batch_size=10", "--progress_interval=0",
             f"--quota_coordinator={redis_server.url}", f"--quota_rps={QUOTA_RPS}",
             f"--summary_path={tmp_path / f'job{job}.json'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * JOBS, [e[-500:] for e in errors]
    summaries = [json.loads((tmp_path / f"job{job}.json").read_text())["counters"] for job in range(JOBS)]
    requests = sum(v for s in summaries for k, v in s.items() if k.startswith("enrich/requests_"))
    refused = sum(s.get("enrich/requests_429", 0) for s in summaries)
    print(f"\n{JOBS} jobs on one quota of {QUOTA_RPS} rps: {requests} requests, {refused} answered 429")
    for t in topics:
        assert len(consume_all(bootstrap_servers, t["out"], timeout=60)) == EVENTS_PER_JOB      # nothing lost
    assert refused <= 0.02 * requests


def test_the_script_on_the_server_grants_what_the_reference_arithmetic_does(redis_server) -> None:
    rng = random.Random(29)
    for round_ in range(10):
        quota = rng.uniform(10, 400)
        names = [f"w{i}" for i in range(rng.randint(1, 12))]
        workers = {w: RedisCoordinator(QuotaCoordinatorConfig(redis_server.url, f"round-{round_}"), worker_id=w)
                   for w in names}
        demands: dict[str, float] = {}
        grants: dict[str, float] = {}
        for _ in range(4):
            for w in rng.sample(names, len(names)):
                demands[w] = float(f"{rng.choice([0.5, 1.0, rng.uniform(1, 300)]):.6f}")
                expected = renewed_grant(w, demands, grants, float(f"{quota:.6f}"))
                grants[w] = workers[w].renew(demands[w], quota, ttl_s=30).rps
                assert grants[w] == pytest.approx(expected, rel=1e-6, abs=1e-6), (w, demands, quota)
                assert sum(grants.values()) <= quota * (1 + 1e-6)
        for _ in range(2):                     # demands held still: fair shares (shrink, then grow)
            for w in names:
                grants[w] = workers[w].renew(demands[w], quota, ttl_s=30).rps
        assert grants == pytest.approx(water_fill(demands, quota), rel=1e-5, abs=1e-5)
