"""Through a rate limiter this project did not write - nginx's limit_req, answering plain 429s
without Retry-After or RateLimit headers - the drain completes with nothing lost, nothing
dead-lettered and retries within the budget. (How close it runs to the limit is a benchmark
figure, not asserted here.)"""
from __future__ import annotations

import json

import pytest

from testbed.kafka.admin import consume_all
from testbed.kafka.produce import produce_events
from tests.integration.reliability_support import fully_committed, job_args, make_topics

pytestmark = pytest.mark.integration


def test_a_drain_through_nginx_limit_req_scores_everything_once(bootstrap_servers, nginx_limited) -> None:
    from pipelines.enrich_payments import run
    url, service = nginx_limited(200, burst=10)
    topics = make_topics(bootstrap_servers, "nginx")
    produced = produce_events(bootstrap_servers, topics.inp, count=3_000, seed=41)
    summary = run(job_args(bootstrap_servers, topics, url, "g-nginx", "--batch_size=2", "--max_in_flight=8"))
    out = [json.loads(m.value)["txn_id"] for m in consume_all(bootstrap_servers, topics.out, timeout=60)]
    rejected = summary.counter("requests", outcome="429")
    print(f"\nnginx 200 r/s: {summary.attempts} attempts, {rejected} plain 429s, "
          f"{summary.attempts / summary.counter('batches'):.3f} attempts per batch")
    assert sorted(out) == sorted(produced.txn_ids)
    assert summary.counter("score_dead_letters") == 0
    assert rejected > 0                                              # nginx really limited the drain
    assert summary.attempts / summary.counter("batches") <= 1.1     # and the client did not storm it
    assert service.stats()["duplicate_txn_scores"] == 0
    assert fully_committed(bootstrap_servers, "g-nginx", topics.inp)
