"""`python -m pipelines.replay_dead_letters` against the real broker.

Dead letters are made exactly as the job makes them (`transforms.outputs.dead_letter_record`),
their `dead_lettered_at_ms` (and record timestamp) then set to control time: the command must
re-publish exactly the selected payloads, byte for byte with their keys, and only count the
rest. The last test replays the dead letters of a real job run.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from confluent_kafka import Producer

from pipelines.replay_dead_letters import REPLAY_GROUP
from testbed.kafka.admin import committed_offsets, consume_all, create_topic, end_offsets
from testbed.kafka.produce import produce_events
from testbed.support.local_ports import free_ports
from tests.integration.reliability_support import REPO, job_args, make_topics, run_job
from transforms.events import DeadLetter
from transforms.kafka.records import SourcePosition
from transforms.outputs import MAX_DEAD_LETTER_PAYLOAD, dead_letter_record

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
OLD_MS = NOW_MS - 3_600_000          # an hour ago
NEW_MS = NOW_MS - 600_000            # ten minutes ago
BETWEEN_MS = NEW_MS - 60_000         # a --since / --until between the two
OTHER_SOURCE = "some-other-topic"

UTF8_PAYLOAD = '{"txn_id":"t-1","amount":12.5,"note":"café ✓"}'.encode()
BINARY_PAYLOAD = b"\xff\xfe\x00t-2 not utf-8 \x80\xc3"
NEW_PAYLOAD = b'{"txn_id":"t-5","amount":7}'
BIG_PAYLOAD = b"x" * (MAX_DEAD_LETTER_PAYLOAD + 10)


@dataclass(frozen=True)
class Produced:
    key: bytes | None
    value: bytes
    partition: int
    timestamp_ms: int


def letter(dlq: str, source_topic: str, reason: str, payload: bytes | None, at_ms: int, partition: int,
           event_id: str | None, stage: str = "enrich") -> Produced:
    """A dead letter as the job writes it, dead-lettered at `at_ms` (also its record timestamp,
    as the job's producer stamps it right after)."""
    dead = DeadLetter(reason=reason, detail=f"{reason}: one line", stage=stage, payload=payload,
                      source=SourcePosition(source_topic, 3, 1000 + partition, 1000 + partition), id=event_id,
                      attempts=2 if stage == "enrich" else 0, last_status=401 if reason == "http_401" else None)
    record = dead_letter_record(dead, dlq)
    doc = json.loads(record.value)
    doc["dead_lettered_at_ms"] = at_ms
    return Produced(record.key, json.dumps(doc, separators=(",", ":")).encode(), partition, at_ms)


def dead_letters(dlq: str, inp: str) -> list[Produced]:
    """Old letters first, then new ones, in each of 2 partitions (so --since can seek past the old)."""
    return [
        letter(dlq, inp, "deadline", UTF8_PAYLOAD, OLD_MS, 0, "t-1"),
        letter(dlq, inp, "http_401", BINARY_PAYLOAD, OLD_MS, 1, "t-2"),            # stored as base64
        letter(dlq, inp, "http_422", b'{"txn_id":"t-3"}', OLD_MS, 0, "t-3"),
        letter(dlq, OTHER_SOURCE, "deadline", b'{"txn_id":"t-4"}', OLD_MS, 1, "t-4"),
        letter(dlq, inp, "http_401", NEW_PAYLOAD, NEW_MS, 0, "t-5"),
        letter(dlq, inp, "deadline", BIG_PAYLOAD, NEW_MS, 1, "t-6"),                # payload_truncated
        letter(dlq, inp, "invalid_event", b"{not json", NEW_MS, 0, None, stage="parse"),
        Produced(b"junk", b"\x00\x01 not a dead letter", 1, NEW_MS),
        Produced(b"t-9", b'{"reason":"deadline","stage":"enrich"}', 0, NEW_MS),     # fields missing
    ]


def produce(bootstrap: str, topic: str, records: list[Produced]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0})
    for r in records:
        producer.produce(topic, r.value, r.key, partition=r.partition, timestamp=r.timestamp_ms)
    assert producer.flush(30) == 0


@pytest.fixture
def topics(bootstrap_servers):
    """(dlq, input): the dead letters above on a 2-partition DLQ, an empty 2-partition input topic."""
    tag = uuid.uuid4().hex[:8]
    dlq, inp = f"replay-dlq-{tag}", f"replay-in-{tag}"
    create_topic(bootstrap_servers, dlq, 2)
    create_topic(bootstrap_servers, inp, 2)
    produce(bootstrap_servers, dlq, dead_letters(dlq, inp))
    return dlq, inp


def replay(bootstrap: str, dlq: str, inp: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.replay_dead_letters", f"--bootstrap_servers={bootstrap}",
                           f"--dlq_topic={dlq}", f"--input_topic={inp}", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The printed counts: {"read": n, "selected": n, "re-published": n, ...}."""
    assert proc.returncode == 0, proc.stderr
    head, *rows = proc.stdout.strip().splitlines()
    found = re.search(r": (\d+) record\(s\) read$", head)
    assert found, proc.stdout
    counts = {"read": int(found.group(1))}
    for row in rows:
        label, number = row.strip().rsplit(None, 1)
        counts[label.strip()] = int(number)
    return counts


def counts(read: int, selected: int, republished: int, truncated: int, unreadable: int, not_matching: int,
           dry_run: bool = False) -> dict[str, int]:
    return {"read": read, "selected": selected,
            "would re-publish (dry run)" if dry_run else "re-published": republished,
            "skipped as truncated": truncated, "skipped as unreadable": unreadable, "not matching": not_matching}


def on_topic(bootstrap: str, topic: str) -> Counter[tuple[bytes | None, bytes | None]]:
    return Counter((r.key, r.value) for r in consume_all(bootstrap, topic))


def test_replays_exactly_the_selected_payloads_with_their_keys(bootstrap_servers, topics) -> None:
    dlq, inp = topics
    dlq_ends = end_offsets(bootstrap_servers, dlq)
    proc = replay(bootstrap_servers, dlq, inp, "--reason", "deadline", "--reason", "http_401")
    assert summary(proc) == counts(read=9, selected=4, republished=3, truncated=1, unreadable=2, not_matching=3)
    assert proc.stderr == ""
    assert on_topic(bootstrap_servers, inp) == Counter({(b"t-1", UTF8_PAYLOAD): 1, (b"t-2", BINARY_PAYLOAD): 1,
                                                        (b"t-5", NEW_PAYLOAD): 1})
    assert end_offsets(bootstrap_servers, dlq) == dlq_ends               # read only
    assert set(committed_offsets(bootstrap_servers, REPLAY_GROUP, dlq).values()) == {None}   # nothing committed

    # A second pass with --since = the first pass's time finds nothing new to replay.
    again = replay(bootstrap_servers, dlq, inp, "--reason", "deadline", "--reason", "http_401",
                   f"--since={int(time.time() * 1000)}")
    assert summary(again)["selected"] == 0
    assert sum(end_offsets(bootstrap_servers, inp).values()) == 3


def test_since_seeks_and_filters(bootstrap_servers, topics) -> None:
    dlq, inp = topics
    since = datetime.fromtimestamp(BETWEEN_MS / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    proc = replay(bootstrap_servers, dlq, inp, "--reason", "deadline", "--reason", "http_401", f"--since={since}")
    # only the 5 new records are read: the seek skipped the old ones
    assert summary(proc) == counts(read=5, selected=2, republished=1, truncated=1, unreadable=2, not_matching=1)
    assert on_topic(bootstrap_servers, inp) == Counter({(b"t-5", NEW_PAYLOAD): 1})


@pytest.mark.parametrize("args, expected", [
    (["--reason=deadline", "--reason=http_401"], counts(9, 4, 3, 1, 2, 3, dry_run=True)),
    (["--reason=deadline", "--reason=http_401", f"--since={BETWEEN_MS}"], counts(5, 2, 1, 1, 2, 1, dry_run=True)),
    (["--reason=deadline", "--reason=http_401", f"--until={BETWEEN_MS}"], counts(9, 2, 2, 0, 2, 5, dry_run=True)),
    (["--reason=http_401"], counts(9, 2, 2, 0, 2, 5, dry_run=True)),
    (["--reason=invalid_event", "--stage=parse"], counts(9, 1, 1, 0, 2, 6, dry_run=True)),
    (["--reason=invalid_event", "--stage=enrich"], counts(9, 0, 0, 0, 2, 7, dry_run=True)),
    (["--reason=deadline", f"--source_topic={OTHER_SOURCE}"], counts(9, 1, 1, 0, 2, 6, dry_run=True)),
    (["--reason=http"], counts(9, 0, 0, 0, 2, 7, dry_run=True)),                 # exact codes only
], ids=["reasons", "since", "until", "one-reason", "stage-parse", "stage-enrich", "source-topic", "no-prefix"])
def test_dry_run_selects_and_counts_without_producing(bootstrap_servers, topics, args, expected) -> None:
    dlq, inp = topics
    assert summary(replay(bootstrap_servers, dlq, inp, *args, "--dry_run")) == expected
    assert sum(end_offsets(bootstrap_servers, inp).values()) == 0


@pytest.mark.parametrize("args, message", [
    (["--dlq_topic=no-such-dlq", "--reason=deadline"], "error: topic(s) missing on "),
    (["--input_topic=no-such-input", "--reason=deadline"], "error: topic(s) missing on "),
    ([], "error: the following arguments are required: --reason"),
    (["--reason=deadline", "--since=yesterday"], "error: argument --since: not an ISO-8601 time"),
    (["--reason=deadline", f"--since={NOW_MS}", f"--until={OLD_MS}"], "error: --since must be before --until"),
    (["--reason=deadline", "--kafka_property=oops"], "error: --kafka_property must be KEY=VALUE"),
    (["--reason=deadline", "--kafka_property=no.such.setting=1"], "error: invalid Kafka client setting"),
])
def test_bad_options_and_missing_topics_fail_with_one_line(bootstrap_servers, topics, args, message) -> None:
    dlq, inp = topics
    proc = replay(bootstrap_servers, dlq, inp, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert sum(end_offsets(bootstrap_servers, inp).values()) == 0


def test_the_dead_letters_of_a_real_run_go_back_byte_for_byte(bootstrap_servers, tmp_path) -> None:
    """A job whose service is unreachable dead-letters every valid event (`deadline` or
    `retries_exhausted`) and the malformed ones (`invalid_event`); replaying the former puts the
    originals back on the input topic, byte for byte."""
    topics = make_topics(bootstrap_servers, "replay-e2e", partitions=2)
    produce_events(bootstrap_servers, topics.inp, count=40, malformed_fraction=0.1, seed=21)
    originals = {(r.partition, r.offset): r.value for r in consume_all(bootstrap_servers, topics.inp)}
    nowhere = f"http://127.0.0.1:{free_ports(1)[0]}"
    run_job(job_args(bootstrap_servers, topics, nowhere, "g-replay-e2e", "--probe_timeout=0",
                     "--max_dead_letter_share=1", "--max_attempts=2", "--batch_deadline=3",
                     "--request_timeout=0.5"), tmp_path, "unreachable")

    letters = [json.loads(r.value) for r in consume_all(bootstrap_servers, topics.dlq)]
    assert len(letters) == len(originals)
    enrich = [d for d in letters if d["stage"] == "enrich"]
    reasons = {d["reason"] for d in enrich}
    assert len(enrich) == 36 and reasons <= {"deadline", "retries_exhausted"}, reasons

    keys = {(r.partition, r.offset): r.key for r in consume_all(bootstrap_servers, topics.inp)}
    wanted = Counter((keys[(d["source"]["partition"], d["source"]["offset"])], d["source"]["partition"],
                      originals[(d["source"]["partition"], d["source"]["offset"])]) for d in enrich)
    assert all(key for key, _, _ in wanted)                   # the input records had keys (account ids)

    before = end_offsets(bootstrap_servers, topics.inp)
    proc = replay(bootstrap_servers, topics.dlq, topics.inp, *(f"--reason={r}" for r in sorted(reasons)))
    assert summary(proc) == counts(read=40, selected=36, republished=36, truncated=0, unreadable=0, not_matching=4)
    replayed = Counter((r.key, r.partition, r.value) for r in consume_all(bootstrap_servers, topics.inp)
                       if r.offset >= before[r.partition])
    assert replayed == wanted          # the original bytes, under the original key, to the original partition


def test_a_transactional_dlq_is_read_to_its_stable_end_without_waiting(bootstrap_servers, topics) -> None:
    """An exactly-once job writes dead letters in transactions: the pass ends at the commit
    markers and at an open transaction's start, and replays only committed letters."""
    dlq, inp = topics
    tag = uuid.uuid4().hex[:8]
    committed = Producer({"bootstrap.servers": bootstrap_servers, "transactional.id": f"replay-c-{tag}", "log_level": 0})
    pending = Producer({"bootstrap.servers": bootstrap_servers, "transactional.id": f"replay-p-{tag}", "log_level": 0})
    for producer in (committed, pending):
        producer.init_transactions(30)
        producer.begin_transaction()
    late = letter(dlq, inp, "deadline", b'{"txn_id":"t-10"}', NOW_MS, 0, "t-10")
    committed.produce(dlq, late.value, late.key, partition=0)
    committed.commit_transaction(30)
    open_letter = letter(dlq, inp, "deadline", b'{"txn_id":"t-11"}', NOW_MS, 1, "t-11")
    pending.produce(dlq, open_letter.value, open_letter.key, partition=1)
    assert pending.flush(30) == 0
    try:
        started = time.monotonic()
        proc = replay(bootstrap_servers, dlq, inp, "--reason=deadline", f"--since={BETWEEN_MS}")
        assert time.monotonic() - started < 30
        assert summary(proc) == counts(read=6, selected=2, republished=1, truncated=1, unreadable=2, not_matching=2)
        assert on_topic(bootstrap_servers, inp) == Counter({(b"t-10", b'{"txn_id":"t-10"}'): 1})
    finally:
        pending.abort_transaction(30)


def test_a_failed_delivery_exits_1_with_one_line(bootstrap_servers, topics) -> None:
    dlq, inp = topics
    tiny = f"replay-tiny-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap_servers, tiny, 1, config={"max.message.bytes": "64"})   # smaller than any batch
    proc = replay(bootstrap_servers, dlq, tiny, "--reason=deadline", "--reason=http_401", f"--source_topic={inp}")
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    assert proc.stderr.startswith(f"error: 3 of 3 record(s) not delivered to {tiny}"), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
