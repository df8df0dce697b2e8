"""Hostile input through the real pipeline: every bad record becomes a dead letter with a reason,
the job keeps going and commits to the end; a transactional topic drains to its end offsets.
(Parser properties: tests/unit/test_event_parsing.py, the fuzz campaign: tests/unit/test_parse_fuzz.py.)"""
from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from confluent_kafka import Producer

from pipelines.enrich_payments import run
from testbed.kafka.admin import committed_offsets, consume_all, end_offsets
from tests.integration.reliability_support import FNAPI, fully_committed, job_args, make_topics, txn_ids

pytestmark = pytest.mark.integration


def event(txn_id: str, **overrides) -> dict:
    doc = dict(txn_id=txn_id, account_id=f"acct-{txn_id}", card_id="card-1", merchant="m-1", amount=12.5,
               currency="EUR", event_time="2024-05-01T10:00:00Z")
    doc.update(overrides)
    return doc


def encode(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def raw_amount(txn_id: str, literal: bytes) -> bytes:
    """An event whose amount is written as `literal` (what json.dumps would never write)."""
    return encode(event(txn_id, amount=0)).replace(b'"amount": 0', b'"amount": ' + literal)


# (key, value, expected reason fragment)
HOSTILE = [
    (b"k", b'{"txn_id": "cut', "invalid JSON"),
    (b"k", b"[1, 2, 3]", "expected a JSON object"),
    (b"k", encode(event("h-amount-str", amount="12.5")), "'amount' must be a number"),
    (b"k", encode({**event("h-txn-int"), "txn_id": 42}), "'txn_id' must be a string"),
    (b"k", encode({"txn_id": "h-missing"}), "missing field(s)"),
    (b"k", b'{"txn_id": "big", "pad": "' + b"a" * 1_000_000 + b'"}', "message too large"),
    (b"k", b"\xff\xfe\x00\x81 not utf-8", "not UTF-8"),
    (b"k", None, "empty message"),                                   # null value (tombstone)
    (b"k", encode(event("h-negative", amount=-5)), "out of range"),
    (b"k", encode(event("h-huge", amount=1e308)), "out of range"),
    (b"k", encode(event("h-zero", amount=0)), "out of range"),
    (b"k", b'{"txn_id":"h-nan","account_id":"a","card_id":"c","merchant":"m","amount":NaN,'
           b'"currency":"EUR","event_time":"2024-05-01T10:00:00Z"}', "out of range"),
    (b"k", encode(event("h-currency", currency="euro")), "'currency'"),
    (b"k", encode(event("h-time", event_time="yesterday")), "'event_time'"),
    # Poison numbers and text: each once failed the bundle on every retry.
    (b"k", raw_amount("h-int400", b"1" + b"0" * 400), "'amount' out of range"),
    (b"k", raw_amount("h-int5000", b"1" + b"0" * 5000), "integer literal too long"),
    (b"k", raw_amount("h-dup", b'5, "amount": 5000'), "duplicate name 'amount'"),
    (b"k", encode(event("\ud800")), "not valid Unicode"),
    (b"\xff\x00", b"[" * 20_000 + b"]" * 20_000, "too deeply nested"),
]


def test_hostile_records_become_dead_letters_and_the_job_commits_to_the_end(bootstrap_servers) -> None:
    topics = make_topics(bootstrap_servers, "hostile", partitions=2,
                         input_config={"max.message.bytes": str(2 * 1024 * 1024)})
    producer = Producer({"bootstrap.servers": bootstrap_servers, "message.max.bytes": 2 * 1024 * 1024})
    valid = [f"v-{i}" for i in range(300)]
    for i, txn in enumerate(valid):
        # Null and binary keys, odd headers: the job reads values only.
        producer.produce(topics.inp, encode(event(txn)), key=None if i % 3 == 0 else b"\xff" + txn.encode(),
                         headers=[("h", b"\xfe\x00"), ("", None), ("\u00e9", b"x" * 10_000)] if i % 5 == 0 else None)
        if i % 25 == 0:
            key, value, _ = HOSTILE[(i // 25) % len(HOSTILE)]
            producer.produce(topics.inp, value, key=key)
    for key, value, _ in HOSTILE[300 // 25 % len(HOSTILE):]:
        producer.produce(topics.inp, value, key=key)
    producer.produce(topics.inp, encode(event("v-dup")), key=b"v-dup")
    producer.produce(topics.inp, encode(event("v-dup", amount=99.0)), key=b"v-dup")  # same txn_id again
    assert producer.flush(30) == 0

    summary = run([FNAPI, f"--bootstrap_servers={bootstrap_servers}", f"--input_topic={topics.inp}",
                   f"--output_topic={topics.out}", f"--dlq_topic={topics.dlq}", "--group_id=g-hostile",
                   "--service_url=" + _service_url() + "/score", "--progress_interval=0"])

    dead = [json.loads(r.value) for r in consume_all(bootstrap_servers, topics.dlq, timeout=60)]
    assert len(dead) == len(HOSTILE)
    assert all(d["stage"] == "parse" and d["reason"] == "invalid_event" and d["detail"] for d in dead)
    reasons = Counter()
    for _, _, fragment in HOSTILE:
        matching = [d for d in dead if fragment in d["detail"]]
        assert matching, f"no dead letter says {fragment!r}: {[d['detail'] for d in dead]}"
        reasons[fragment] += 1
    big = next(d for d in dead if "too large" in d["detail"])
    assert big["payload_truncated"] and big["payload_bytes"] > 1_000_000
    assert next(d for d in dead if "UTF-8" in d["detail"])["payload_encoding"] == "base64"

    counts = txn_ids(bootstrap_servers, topics.out)
    assert set(counts) == set(valid) | {"v-dup"}
    assert counts["v-dup"] == 2                      # duplicates are scored and written, de-dup downstream
    assert summary.counter("parse_dead_letters") == len(HOSTILE)
    assert summary.counter("score_dead_letters") == 0
    assert fully_committed(bootstrap_servers, "g-hostile", topics.inp)


_URL = []


@pytest.fixture(autouse=True)
def _service(scoring_service):
    _URL[:] = [scoring_service.url]


def _service_url() -> str:
    return _URL[0]


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_a_transactional_topic_drains_to_its_end_offsets_and_aborted_records_are_never_scored(
        bootstrap_servers, scoring_service, delivery) -> None:
    """Committed and aborted transactions leave markers and aborted runs between the records and a
    commit marker at the end of each partition; drain chunks of 37 offsets end anywhere, also just
    below a marker or on one. (Runner splits at every offset: tests/integration/test_kafka_io.py.)"""
    topics = make_topics(bootstrap_servers, "txn", partitions=3)
    producer = Producer({"bootstrap.servers": bootstrap_servers, "transactional.id": f"txn-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    committed, aborted = set(), set()
    for n in range(120):
        ids = [f"{'c' if n % 4 != 1 else 'a'}-{n}-{i}" for i in range(1 + n % 4)]
        producer.begin_transaction()
        for txn in ids:
            producer.produce(topics.inp, encode(event(txn)), key=txn.encode(), partition=n % 3)
        producer.flush(30)
        if n % 4 != 1:
            producer.commit_transaction(30)
            committed.update(ids)
        else:
            producer.abort_transaction(30)
            aborted.update(ids)

    group = f"g-txn-{delivery}"
    summary = run(job_args(bootstrap_servers, topics, scoring_service.url, group, "--drain_chunk=37",
                           "--kafka_property=isolation.level=read_committed", f"--delivery={delivery}"))

    assert Counter(txn_ids(bootstrap_servers, topics.out)) == Counter({txn: 1 for txn in committed})
    assert not [r for r in consume_all(bootstrap_servers, topics.dlq, timeout=10)]
    assert not aborted & set(scoring_service.txn_attempts())          # never even sent to the service
    assert summary.counter("events_in") == len(committed)
    assert committed_offsets(bootstrap_servers, group, topics.inp) == end_offsets(bootstrap_servers, topics.inp)
