"""Malformed 200 answers from the scoring service (its hostile mode, testbed/scoring/hostile.py):
each is a retry within the budget or a dead letter with the reason and the status, never a
failed bundle. (The codec over arbitrary bodies: tests/unit/test_contract_fuzz.py.)"""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
import requests

from pipelines.enrich_payments import run
from testbed.kafka.admin import consume_all
from testbed.kafka.produce import produce_events
from testbed.scoring.hostile import SHAPES
from tests.integration.reliability_support import fully_committed, job_args, make_topics, txn_ids
from transforms.contract.http import HttpJsonCaller
from transforms.contract.loader import DEFAULT_CONTRACT, load_contract
from transforms.contract.schema import Event
from transforms.control.signals import AttemptKind, ElementFailure

pytestmark = pytest.mark.integration


def test_every_hostile_shape_is_a_retry_or_a_dead_letter_with_a_one_line_reason(scoring_service_factory) -> None:
    """A body cut or garbled on the way is retried; a complete answer of the wrong shape rejects the
    batch, and a wrong result only its own event."""
    service = scoring_service_factory(rate=100_000, hostile_every=1)
    contract = load_contract(DEFAULT_CONTRACT).with_url(service.url + "/score")
    events = [Event((t, "a", "c", "m", 1.0, "EUR", "2026-01-01T00:00:00Z"), t, "a") for t in ("t-1", "t-2")]

    async def one_attempt_per_shape():
        caller = HttpJsonCaller(contract)   # opened on the loop it is used on
        await caller.open()
        try:
            return [await caller.call(events) for _ in SHAPES]
        finally:
            await caller.close()

    for shape, result in zip(SHAPES, asyncio.run(one_attempt_per_shape())):
        assert result.status == 200, (shape.name, result)
        if shape.retryable:
            assert result.kind is AttemptKind.RETRYABLE, (shape.name, result)
        elif result.kind is AttemptKind.SUCCESS:
            failed = [v for v in result.value if isinstance(v, ElementFailure)]
            assert failed and all(f.reason == "invalid_result" and _one_line(f.detail) for f in failed), shape.name
        else:
            assert result.kind is AttemptKind.REJECTED and result.reason == "invalid_response", (shape.name, result)
        assert _one_line(result.detail or result.reason), (shape.name, result.detail)
    assert requests.get(service.url + "/admin/hostile", timeout=5).json()["sent"] == {s.name: 1 for s in SHAPES}


def _one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and len(text) < 200


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
    dead.update(d["id"] for d in letters)
    assert scored + dead == Counter(produced.txn_ids)               # each event exactly one output
    assert all(d["stage"] == "enrich" and d["last_status"] == 200 and d["attempts"] >= 1
               and d["reason"] in ("invalid_response", "invalid_result") and d["detail"] for d in letters)
    retried = sum(n for name, n in sent.items() if next(s for s in SHAPES if s.name == name).retryable)
    fatal = sum(sent.values()) - retried
    assert summary.counter("retries") >= retried                    # cut or garbled bodies were sent again
    assert fatal <= len(letters) <= 10 * fatal       # a wrong answer costs its batch at most, a wrong result its event
    assert fully_committed(bootstrap_servers, "g-hostile-svc", topics.inp)
    print(f"hostile answers {sum(sent.values())} ({retried} retryable), retries {summary.counter('retries')}, "
          f"dead letters {len(letters)}, scored {sum(scored.values())}")
