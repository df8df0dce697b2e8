"""Malformed 200 answers from the scoring service (its hostile mode, testbed/scoring/hostile.py):
each is a retry within the budget or a dead letter with the reason and the status, never a
failed bundle. (The codec over arbitrary bodies: tests/unit/test_scoring_codec_fuzz.py.)"""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
import requests

from pipelines.enrich_payments import run
from testbed.kafka_admin import consume_all
from testbed.produce import produce_events
from testbed.scoring.hostile import SHAPES
from tests.integration.reliability_support import fully_committed, job_args, make_topics, txn_ids
from transforms.control.signals import AttemptKind
from transforms.scoring.client import ScoringClient

pytestmark = pytest.mark.integration


def test_every_hostile_shape_is_a_retryable_or_a_fatal_attempt(scoring_service_factory) -> None:
    service = scoring_service_factory(rate=100_000, hostile_every=1)
    ids = ["t-1", "t-2"]
    body = json.dumps([{"txn_id": i} for i in ids]).encode()

    async def one_attempt_per_shape():
        client = ScoringClient(service.url)   # made on the loop it is used on
        try:
            return [await client.attempt(body, ids, "key") for _ in SHAPES]
        finally:
            await client.close()

    for shape, result in zip(SHAPES, asyncio.run(one_attempt_per_shape())):
        expected = AttemptKind.RETRYABLE if shape.retryable else AttemptKind.FATAL
        assert (result.kind, result.status) == (expected, 200), (shape.name, result)
        assert "\n" not in result.reason and len(result.reason) < 160, (shape.name, result.reason)
    assert requests.get(service.url + "/admin/hostile", timeout=5).json()["sent"] == {s.name: 1 for s in SHAPES}


def test_a_drain_through_hostile_answers_retries_cut_bodies_and_dead_letters_wrong_ones(
        bootstrap_servers, scoring_service_factory) -> None:
    service = scoring_service_factory(rate=100_000, hostile_every=2)
    topics = make_topics(bootstrap_servers, "hostile-svc", partitions=2)
    produced = produce_events(bootstrap_servers, topics.inp, count=600, seed=12)

    summary = run(job_args(bootstrap_servers, topics, service.url, "g-hostile-svc", "--batch_size=10"))

    sent = Counter(requests.get(service.url + "/admin/hostile", timeout=5).json()["sent"])
    assert set(sent) == {s.name for s in SHAPES}                    # every shape met at least once
    scored, dead = txn_ids(bootstrap_servers, topics.out), Counter()
    letters = [json.loads(r.value) for r in consume_all(bootstrap_servers, topics.dlq, timeout=60)]
    dead.update(d["txn_id"] for d in letters)
    assert scored + dead == Counter(produced.txn_ids)               # each event exactly one output
    assert all(d["stage"] == "score" and d["last_status"] == 200 and d["attempts"] >= 1
               and d["reason"].startswith("non-retryable invalid_response: ") for d in letters)
    retried = sum(n for name, n in sent.items() if next(s for s in SHAPES if s.name == name).retryable)
    fatal = sum(sent.values()) - retried
    assert summary.counter("retries") >= retried                    # cut or garbled bodies were sent again
    assert fatal <= len(letters) <= 10 * fatal                     # a wrong answer costs its batch, only
    assert fully_committed(bootstrap_servers, "g-hostile-svc", topics.inp)
    print(f"hostile answers {sum(sent.values())} ({retried} retryable), retries {summary.counter('retries')}, "
          f"dead letters {len(letters)}, scored {sum(scored.values())}")
