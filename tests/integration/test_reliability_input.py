"""Hostile input through the real pipeline: every bad record becomes a dead letter with a reason,
the job keeps going and commits to the end. (Parser properties: tests/unit/test_event_parsing.py.)"""
from __future__ import annotations

import json
from collections import Counter

import pytest
from confluent_kafka import Producer

from pipelines.enrich_payments import run
from testbed.kafka_admin import consume_all
from tests.integration.reliability_support import FNAPI, fully_committed, make_topics, txn_ids

pytestmark = pytest.mark.integration


def event(txn_id: str, **overrides) -> dict:
    doc = dict(txn_id=txn_id, account_id=f"acct-{txn_id}", card_id="card-1", merchant="m-1", amount=12.5,
               currency="EUR", event_time="2024-05-01T10:00:00Z")
    doc.update(overrides)
    return doc


def encode(doc: dict) -> bytes:
    return json.dumps(doc).encode()


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
]


def test_hostile_records_become_dead_letters_and_the_job_commits_to_the_end(bootstrap_servers) -> None:
    topics = make_topics(bootstrap_servers, "hostile", partitions=2,
                         input_config={"max.message.bytes": str(2 * 1024 * 1024)})
    producer = Producer({"bootstrap.servers": bootstrap_servers, "message.max.bytes": 2 * 1024 * 1024})
    valid = [f"v-{i}" for i in range(300)]
    for i, txn in enumerate(valid):
        producer.produce(topics.inp, encode(event(txn)), key=None if i % 3 == 0 else txn.encode())  # null keys
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
                   "--scoring_url=" + _service_url(), "--progress_interval=0"])

    dead = [json.loads(r.value) for r in consume_all(bootstrap_servers, topics.dlq, timeout=60)]
    assert len(dead) == len(HOSTILE)
    assert all(d["stage"] == "parse" and d["reason"] for d in dead)
    reasons = Counter()
    for _, _, fragment in HOSTILE:
        matching = [d for d in dead if fragment in d["reason"]]
        assert matching, f"no dead letter says {fragment!r}: {[d['reason'] for d in dead]}"
        reasons[fragment] += 1
    big = next(d for d in dead if "too large" in d["reason"])
    assert big["payload_truncated"] and big["payload_bytes"] > 1_000_000
    assert next(d for d in dead if "UTF-8" in d["reason"])["payload_encoding"] == "base64"

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
