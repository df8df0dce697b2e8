"""The Beam glue of the data path on the FnApiRunner, without Kafka or the scoring service.

`ScoreInBatches` runs with a fake runtime (its `runtime_factory` seam) and
`CommitOffsets` with an in-memory twin of the group's offsets (its
`offsets_factory` seam); the parse step needs neither. The runner runs in this
process, so the fakes report through module-level registries.
"""
from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict
from concurrent.futures import Future

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from transforms import events
from transforms.control.batching import BatchPolicy
from transforms.control.throttle import CallOutcome
from transforms.events import DeadLetter, ParsedEvent, ParseEvents, PaymentEvent, ScoredEvent, SkippedOffsets
from transforms.kafka.commit import CommitOffsets, GroupOffsets
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.records import CommittedOffset, KafkaRecord, OffsetAck, OffsetGap, SourcePosition
from transforms.outputs import to_record
from transforms.scoring.codec import Verdict
from transforms.scoring.runtime import BatchResult, ScoringConfig
from transforms.scoring.score_in_batches import ScoreInBatches, shard_of

FNAPI = ["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"]

_LOCK = threading.Lock()
_SUBMITTED: dict[str, list[list[ParsedEvent]]] = defaultdict(list)
_OUTPUTS: dict[str, list[object]] = defaultdict(list)
_COMMITS: dict[str, list[dict[tuple[str, int], int]]] = defaultdict(list)


class FakeRuntime:
    """Completes every batch at once: scored, unless one of its txn_ids starts with "fail"."""

    def __init__(self, run: str) -> None:
        self._run = run

    def submit(self, batch: list[ParsedEvent], shard: int) -> Future[BatchResult]:
        with _LOCK:
            _SUBMITTED[self._run].append(list(batch))
        if any(p.event.txn_id.startswith("fail") for p in batch):
            outcome = CallOutcome(ok=False, attempts=3, last_status=503, error="gave up after 3 attempts: http_503")
        else:
            outcome = CallOutcome(ok=True, attempts=1, reasons=["ok"], latencies_s=[0.01],
                                  value=[Verdict(0.5, "approve", "m1") for _ in batch])
        future: Future[BatchResult] = Future()
        future.set_result(BatchResult(list(batch), outcome, 0.01))
        return future

    def gauges(self) -> dict[str, float]:
        return {"rate_limit_rps": 10.0, "in_flight": 0, "in_flight_limit": 4}


class FakeRuntimeFactory:
    def __init__(self, run: str) -> None:
        self._run = run

    def __call__(self, config: ScoringConfig) -> FakeRuntime:
        return FakeRuntime(self._run)


class FakeOffsets(GroupOffsets):
    """The group's offsets in memory: every partition starts committed at 0."""

    def __init__(self, run: str) -> None:
        self._run = run

    def committed(self, topic: str, partition: int) -> int:
        return 0

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        with _LOCK:
            _COMMITS[self._run].append(dict(offsets))

    def close(self) -> None:
        pass


class FakeOffsetsFactory:
    def __init__(self, run: str) -> None:
        self._run = run

    def __call__(self, conn: KafkaConnection) -> FakeOffsets:
        return FakeOffsets(self._run)


class _Collect(beam.DoFn):
    def __init__(self, run: str) -> None:
        self._run = run

    def process(self, element: object):
        with _LOCK:
            _OUTPUTS[self._run].append(element)


def _parsed(i: int, account: str | None = None, raw_bytes: int = 100, txn: str | None = None) -> ParsedEvent:
    event = PaymentEvent(txn or f"t{i}", account or f"acct-{i % 37}", "card", "shop", 10.0, "EUR",
                         "2026-01-01T00:00:00Z")
    return ParsedEvent(event, b"x" * raw_bytes, SourcePosition("in", i % 4, i, i), 1_700_000_000_000 + i)


def _run_scoring(items: list[object], policy: BatchPolicy, shards: int = 4) -> tuple[list[object], list[list]]:
    run = uuid.uuid4().hex
    config = ScoringConfig(url="http://unused.invalid")
    with beam.Pipeline(options=PipelineOptions(FNAPI)) as p:
        (p | beam.Create(items, reshuffle=False)
           | ScoreInBatches(config, policy, shards, runtime_factory=FakeRuntimeFactory(run))
           | beam.ParDo(_Collect(run)))
    return _OUTPUTS.pop(run), _SUBMITTED.pop(run, [])


def test_every_input_yields_exactly_one_output_and_tails_are_flushed() -> None:
    valid = [_parsed(i) for i in range(1003)]
    parse_failures = [DeadLetter("invalid JSON", "parse", b"{", SourcePosition("in", 0, 5000 + i, 5000 + i))
                      for i in range(7)]
    outputs, batches = _run_scoring(valid + parse_failures, BatchPolicy(max_events=20, max_bytes=10_000))

    scored = [o for o in outputs if isinstance(o, ScoredEvent)]
    passed = [o for o in outputs if isinstance(o, DeadLetter)]
    assert sorted(s.parsed.event.txn_id for s in scored) == sorted(p.event.txn_id for p in valid)
    assert sorted(d.source.offset for d in passed) == sorted(d.source.offset for d in parse_failures)
    assert len(outputs) == len(valid) + len(parse_failures)
    # Each shard's last, partial batch was flushed at the end of the bundle.
    assert sum(len(b) for b in batches) == len(valid)
    assert any(len(b) < 20 for b in batches)
    assert all(s.score == 0.5 and s.decision == "approve" and s.attempts == 1 for s in scored)


def test_batches_respect_the_event_and_byte_bounds_and_shards() -> None:
    # 300-byte events under a 1,000-byte bound: at most 3 per batch although 20 would fit by count.
    valid = [_parsed(i, raw_bytes=300) for i in range(200)]
    _, batches = _run_scoring(valid, BatchPolicy(max_events=20, max_bytes=1_000))
    assert all(1 <= len(b) <= 3 for b in batches)
    assert all(sum(len(p.raw) for p in b) <= 1_000 for b in batches)
    # A batch holds the events of one shard only (an account always lands in one shard).
    _, by_count = _run_scoring([_parsed(i) for i in range(200)], BatchPolicy(max_events=7, max_bytes=10**6))
    assert all(len(b) <= 7 for b in by_count)
    assert all(len({shard_of(p.event.account_id, 4) for p in b}) == 1 for b in by_count)


def test_a_failed_batch_becomes_one_dead_letter_per_event_with_the_reason() -> None:
    events = [_parsed(i, account="acct-same") for i in range(5)] + [_parsed(99, account="acct-same", txn="fail-1")]
    outputs, _ = _run_scoring(events, BatchPolicy(max_events=100, max_bytes=10**6), shards=1)
    dead = [o for o in outputs if isinstance(o, DeadLetter)]
    assert len(outputs) == 6 and len(dead) == 6    # the one batch failed as a whole
    assert all(d.stage == "score" and d.attempts == 3 and d.last_status == 503 and "http_503" in d.reason
               for d in dead)
    assert {d.txn_id for d in dead} == {p.event.txn_id for p in events}


def test_parse_turns_every_record_into_an_event_or_a_dead_letter() -> None:
    good = {"txn_id": "t1", "account_id": "a", "card_id": "c", "merchant": "m", "amount": 5.0,
            "currency": "EUR", "event_time": "2026-01-01T00:00:00Z"}
    values = [json.dumps(good).encode(), b"{not json", None, b"\xff\xfe", json.dumps({**good, "amount": -1}).encode()]
    records = [KafkaRecord(SourcePosition("in", 0, i, i), None, v, 0) for i, v in enumerate(values)]
    outputs = _parse(records)
    assert [type(o).__name__ for o in outputs] == ["ParsedEvent"] + ["DeadLetter"] * 4
    assert all(o.reason and o.stage == "parse" for o in outputs[1:])


def test_a_parser_bug_costs_one_dead_letter_not_the_bundle(monkeypatch) -> None:
    real = events.parse_event

    def buggy(value: bytes | None):
        if value == b"boom":
            raise RuntimeError("a bug in the parser")
        return real(value)

    monkeypatch.setattr(events, "parse_event", buggy)
    good = json.dumps({"txn_id": "t1", "account_id": "a", "card_id": "c", "merchant": "m", "amount": 5.0,
                       "currency": "EUR", "event_time": "2026-01-01T00:00:00Z"}).encode()
    records = [KafkaRecord(SourcePosition("in", 0, i, i), None, v, 0) for i, v in enumerate([good, b"boom", good])]
    outputs = _parse(records)
    assert [type(o).__name__ for o in outputs] == ["ParsedEvent", "DeadLetter", "ParsedEvent"]
    assert outputs[1].reason == "parser error: RuntimeError: 'a bug in the parser'"


def test_an_offset_gap_passes_parse_and_scoring_and_becomes_the_gap_again() -> None:
    gap = OffsetGap(SourcePosition("in", 0, 9, 5))
    [skipped] = _parse([gap])
    assert isinstance(skipped, SkippedOffsets) and skipped.source == gap.source
    outputs, batches = _run_scoring([skipped], BatchPolicy(max_events=20, max_bytes=10_000))
    assert outputs == [skipped] and batches == []        # passed through like a dead letter
    assert to_record(skipped, "out", "dlq") == gap       # nothing to write: the writer acks the gap


def _parse(records: list) -> list:
    run = uuid.uuid4().hex
    with beam.Pipeline(options=PipelineOptions(FNAPI)) as p:
        p | beam.Create(records, reshuffle=False) | ParseEvents() | beam.ParDo(_Collect(run))
    return sorted(_OUTPUTS.pop(run), key=lambda o: o.source.offset)


def test_commits_advance_over_contiguous_acknowledged_ranges_only() -> None:
    acks = [OffsetAck("in", 0, ((0, 5),)), OffsetAck("in", 0, ((10, 20),)), OffsetAck("in", 0, ((5, 10),)),
            OffsetAck("in", 1, ((3, 8),)),                    # p1 misses [0, 3): must not move
            OffsetAck("in", 2, ((0, 2), (4, 6))), OffsetAck("in", 2, ((2, 4),))]
    run = uuid.uuid4().hex
    conn = KafkaConnection("unused:9092", group_id="g")
    with beam.Pipeline(options=PipelineOptions(FNAPI)) as p:
        (p | beam.Create(acks, reshuffle=False)
           | CommitOffsets(conn, offsets_factory=FakeOffsetsFactory(run))
           | beam.ParDo(_Collect(run)))
    advanced = _OUTPUTS.pop(run)
    assert all(isinstance(a, CommittedOffset) for a in advanced)
    final: dict[tuple[str, int], int] = {}
    for commit in _COMMITS.pop(run):
        for key, offset in commit.items():
            assert offset >= final.get(key, 0)        # never backwards
            final[key] = offset
    assert final == {("in", 0): 20, ("in", 2): 6}
