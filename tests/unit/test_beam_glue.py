"""The Beam glue of the data path on the FnApiRunner, without Kafka or a service.

`ThrottledEnrichment` runs with a fake runtime (its `runtime_factory` seam) and
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
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.contract.loader import DEFAULT_CONTRACT, load_contract, parse_contract
from transforms.contract.schema import MAX_NESTING, Event
from transforms.control.settings import ThrottleSettings
from transforms.control.signals import ElementFailure
from transforms.control.throttle import CallOutcome
from transforms.enrichment.outcomes import Enriched, Failed
from transforms.enrichment.runtime import BatchResult, EnrichmentStopped
from transforms.enrichment.transform import ThrottledEnrichment, shard_of
from transforms.events import (
    DeadLetter,
    EventList,
    ParsedEvent,
    ParseEvents,
    SkippedOffsets,
    shard_key_of,
    size_of,
    timestamp_of,
)
from transforms.kafka.commit import CommitOffsets, GroupOffsets
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.records import CommittedOffset, KafkaRecord, OffsetAck, OffsetGap, SourcePosition
from transforms.outputs import RecordEncoder

FNAPI = ["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"]
CONTRACT = load_contract(DEFAULT_CONTRACT)
ORDERS_LIKE = parse_contract({
    "event": {"id": "order_no", "shard_key": "store",
              "fields": {"order_no": {"type": "integer"}, "store": {"type": "string"}, "meta": {"type": "object"}}},
    "service": {"url": "http://127.0.0.1:9/match"},
    "request": {"fields": {"order_no": "id"}},
    "response": {"results": "results", "id": "id", "fields": {"risk": {"type": "number"}}},
}, "orders.yaml")

_LOCK = threading.Lock()
_SUBMITTED: dict[str, list[list[ParsedEvent]]] = defaultdict(list)
_OUTPUTS: dict[str, list[object]] = defaultdict(list)
_COMMITS: dict[str, list[dict[tuple[str, int], int]]] = defaultdict(list)


def _id(element: object) -> str:
    return element.event.id if isinstance(element, ParsedEvent) else str(element)


class FakeRuntime:
    """Completes every batch at once: enriched, unless an id starts with "fail" (the batch fails), "bad"
    (that element fails alone) or "stop" (the job must stop)."""

    def __init__(self, run: str) -> None:
        self._run = run

    def submit(self, batch: list, shard: int) -> Future[BatchResult]:
        with _LOCK:
            _SUBMITTED[self._run].append(list(batch))
        ids = [_id(e) for e in batch]
        if any(i.startswith("stop") for i in ids):
            outcome = CallOutcome(ok=False, attempts=1, last_status=401, failure="http_401",
                                  error="status 401 is listed under status.stop", stop=True)
        elif any(i.startswith("fail") for i in ids):
            outcome = CallOutcome(ok=False, attempts=3, last_status=503, failure="retries_exhausted",
                                  error="gave up after 3 attempts: http_503")
        else:
            outcome = CallOutcome(ok=True, attempts=1, reasons=["ok"], latencies_s=[0.01],
                                  value=[ElementFailure("missing_result", "no result") if i.startswith("bad")
                                         else (0.5, "approve", "m1") for i in ids])
        future: Future[BatchResult] = Future()
        future.set_result(BatchResult(list(batch), outcome, 0.01))
        return future

    def account(self, result: BatchResult) -> None:
        if result.outcome.stop:
            raise EnrichmentStopped(result.outcome.error or "")

    def gauges(self) -> dict[str, float]:
        return {"rate_limit_rps": 10.0, "in_flight": 0, "in_flight_limit": 4}

    def take_throttled_ms(self) -> int:
        return 0


class FakeRuntimeFactory:
    def __init__(self, run: str) -> None:
        self._run = run

    def __call__(self, settings: ThrottleSettings, caller: object, key: str) -> FakeRuntime:
        return FakeRuntime(self._run)


class NoCaller:
    """Never called: the fake runtime answers."""


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
    txn, account = txn or f"t{i}", account or f"acct-{i % 37}"
    event = Event((txn, account, "card", "shop", 10.0, "EUR", "2026-01-01T00:00:00Z"), txn, account)
    return ParsedEvent(event, b"x" * raw_bytes, SourcePosition("in", i % 4, i, i), 1_700_000_000_000 + i)


def _enrich(items: list[object], shards: int = 4, lists: bool = False, **settings) -> tuple[list[object], list[list]]:
    """Outputs and submitted batches; with `lists`, the items go in as lists of up to 50 (the job's
    record batches, crossing to the stateful step as `EventList`s) and every output must be a list
    (flattened here)."""
    run = uuid.uuid4().hex
    inputs = [items[i:i + 50] for i in range(0, len(items), 50)] if lists else items
    with beam.Pipeline(options=PipelineOptions(FNAPI)) as p:
        (p | beam.Create(inputs, reshuffle=False)
           | ThrottledEnrichment(NoCaller(), ThrottleSettings(num_shards=shards, **settings), shard_key=shard_key_of,
                                 size_of=size_of, passthrough=(DeadLetter,), timestamp_of=timestamp_of,
                                 lists=lists, shard_list_type=EventList if lists else list[Any],
                                 runtime_factory=FakeRuntimeFactory(run))
           | beam.ParDo(_Collect(run)))
    outputs = _OUTPUTS.pop(run)
    if lists:
        assert all(isinstance(o, list) and o for o in outputs)
        outputs = [o for out in outputs for o in out]
    return outputs, _SUBMITTED.pop(run, [])


def _letter(offset: int) -> DeadLetter:
    return DeadLetter("invalid_event", "invalid JSON", "parse", b"{", SourcePosition("in", 0, offset, offset))


@pytest.mark.parametrize("lists", [False, True])
def test_every_input_yields_exactly_one_output_and_tails_are_flushed(lists: bool) -> None:
    valid = [_parsed(i) for i in range(1003)]
    parse_failures = [_letter(5000 + i) for i in range(7)]
    outputs, batches = _enrich(valid + parse_failures, lists=lists, batch_size=20, max_batch_bytes=10_000)

    enriched = [o for o in outputs if isinstance(o, Enriched)]
    passed = [o for o in outputs if isinstance(o, DeadLetter)]
    assert sorted(e.element.event.id for e in enriched) == sorted(p.event.id for p in valid)
    assert sorted(d.source.offset for d in passed) == sorted(d.source.offset for d in parse_failures)
    assert len(outputs) == len(valid) + len(parse_failures)
    # Each shard's last, partial batch was flushed at the end of the bundle.
    assert sum(len(b) for b in batches) == len(valid)
    assert any(len(b) < 20 for b in batches)
    assert all(e.result == (0.5, "approve", "m1") and e.attempts == 1 for e in enriched)


def _nested(order_no: int, levels: int) -> KafkaRecord:
    meta = '{"a":' * levels + "{}" + "}" * levels
    value = f'{{"order_no":{order_no},"store":"s-1","meta":{meta}}}'.encode()
    return KafkaRecord(SourcePosition("in", 0, order_no, order_no), None, value, 1_700_000_000_000)


def test_an_event_nested_deeper_than_the_job_carries_is_a_dead_letter_not_a_failed_bundle() -> None:
    """Beam pickles elements where it samples their size and at the keyed boundary, and pickle gives
    up at about 460 levels; an event the parser accepted must never fail the bundle there, which the
    runner would retry with the same input for ever."""
    run = uuid.uuid4().hex
    with beam.Pipeline(options=PipelineOptions(FNAPI)) as p:
        (p | beam.Create([[_nested(1, MAX_NESTING - 1), _nested(2, 600)]], reshuffle=False)
           | ParseEvents(ORDERS_LIKE.schema)
           | ThrottledEnrichment(NoCaller(), ThrottleSettings(num_shards=1), shard_key=shard_key_of,
                                 passthrough=(DeadLetter,), timestamp_of=timestamp_of, lists=True,
                                 shard_list_type=EventList, runtime_factory=FakeRuntimeFactory(run))
           | beam.ParDo(_Collect(run)))
    outputs = {o.element.event.id if isinstance(o, Enriched) else o.source.offset: o
               for out in _OUTPUTS.pop(run) for o in out}
    assert isinstance(outputs["1"], Enriched)
    assert outputs[2].reason == "invalid_event" and f"deeper than {MAX_NESTING} levels" in outputs[2].detail


@pytest.mark.parametrize("lists", [False, True])
def test_batches_respect_the_event_and_byte_bounds_and_shards(lists: bool) -> None:
    # 300-byte events under a 1,000-byte bound: at most 3 per batch although 20 would fit by count.
    valid = [_parsed(i, raw_bytes=300) for i in range(200)]
    _, batches = _enrich(valid, lists=lists, batch_size=20, max_batch_bytes=1_000)
    assert all(1 <= len(b) <= 3 for b in batches)
    assert all(sum(len(p.raw) for p in b) <= 1_000 for b in batches)
    # A batch holds the events of one shard only (an account always lands in one shard).
    _, by_count = _enrich([_parsed(i) for i in range(200)], lists=lists, batch_size=7)
    assert all(len(b) <= 7 for b in by_count)
    assert all(len({shard_of(p.event.key, 4) for p in b}) == 1 for b in by_count)


@pytest.mark.parametrize("lists", [False, True])
def test_a_failed_batch_fails_every_element_and_a_failed_result_only_its_own(lists: bool) -> None:
    events = ([_parsed(i, account="acct-same") for i in range(5)]
              + [_parsed(99, account="acct-same", txn="fail-1")] + [_parsed(7, account="other", txn="bad-7")])
    outputs, _ = _enrich(events, shards=1, lists=lists, batch_size=6)
    failed = [o for o in outputs if isinstance(o, Failed)]
    assert len(outputs) == 7 and len(failed) == 7     # the first batch failed as a whole; bad-7 alone
    whole = [f for f in failed if f.reason == "retries_exhausted"]
    assert {f.element.event.id for f in whole} == {p.event.id for p in events[:6]}
    assert all(f.attempts == 3 and f.last_status == 503 and "http_503" in f.detail for f in whole)
    [alone] = [f for f in failed if f.reason == "missing_result"]
    assert alone.element.event.id == "bad-7" and alone.attempts == 1


@pytest.mark.parametrize("lists", [False, True])
def test_a_stopping_batch_fails_the_bundle_with_the_one_line_reason_and_emits_nothing_of_it(lists: bool) -> None:
    events = [_parsed(i) for i in range(50)] + [_parsed(50, txn="stop-50")]
    run = uuid.uuid4().hex
    with pytest.raises(Exception, match="enrichment stopped: status 401 is listed under status.stop"):
        with beam.Pipeline(options=PipelineOptions(FNAPI)) as p:
            (p | beam.Create([events] if lists else events, reshuffle=False)
               | ThrottledEnrichment(NoCaller(), ThrottleSettings(num_shards=1, batch_size=100),
                                     timestamp_of=timestamp_of if lists else None, lists=lists,
                                     runtime_factory=FakeRuntimeFactory(run))
               | beam.ParDo(_Collect(run)))
    outputs = _OUTPUTS.pop(run, [])
    assert not any(_id(o.element) == "stop-50" for o in (sum(outputs, []) if lists else outputs))


def test_outputs_keep_their_elements_windows_and_timestamps() -> None:
    """Any PCollection, windowed or not: each output is in its element's window, at its timestamp."""
    run = uuid.uuid4().hex
    with beam.Pipeline(options=PipelineOptions(FNAPI)) as p:
        (p | beam.Create([(f"e{i}", i * 10) for i in range(30)])
           | beam.Map(lambda kv: beam.window.TimestampedValue(kv[0], kv[1]))
           | beam.WindowInto(beam.window.FixedWindows(60))
           | ThrottledEnrichment(NoCaller(), ThrottleSettings(num_shards=2, batch_size=4),
                                 runtime_factory=FakeRuntimeFactory(run))
           | beam.ParDo(_CollectWindowed(run)))
    seen = sorted(_OUTPUTS.pop(run))
    assert seen == sorted((f"e{i}", i * 10, (i * 10 // 60) * 60) for i in range(30))


class _CollectWindowed(beam.DoFn):
    def __init__(self, run: str) -> None:
        self._run = run

    def process(self, element: object, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        with _LOCK:
            _OUTPUTS[self._run].append((element.element, int(timestamp), int(window.start)))


GOOD = {"txn_id": "t1", "account_id": "a", "card_id": "c", "merchant": "m", "amount": 5.0,
        "currency": "EUR", "event_time": "2026-01-01T00:00:00Z"}


def test_parse_turns_every_record_into_an_event_or_a_dead_letter() -> None:
    values = [json.dumps(GOOD).encode(), b"{not json", None, b"\xff\xfe", json.dumps({**GOOD, "amount": -1}).encode()]
    records = [KafkaRecord(SourcePosition("in", 0, i, i), None, v, 0) for i, v in enumerate(values)]
    outputs = _parse(records)
    assert [type(o).__name__ for o in outputs] == ["ParsedEvent"] + ["DeadLetter"] * 4
    assert all(o.reason == "invalid_event" and o.detail and o.stage == "parse" for o in outputs[1:])


def test_a_parser_bug_costs_one_dead_letter_not_the_bundle(monkeypatch) -> None:
    parser_class = type(CONTRACT.schema.parser)
    real = parser_class.parse

    def buggy(self, value: bytes | None):
        if value == b"boom":
            raise RuntimeError("a bug in the parser")
        return real(self, value)

    monkeypatch.setattr(parser_class, "parse", buggy)
    good = json.dumps(GOOD).encode()
    records = [KafkaRecord(SourcePosition("in", 0, i, i), None, v, 0) for i, v in enumerate([good, b"boom", good])]
    outputs = _parse(records)
    assert [type(o).__name__ for o in outputs] == ["ParsedEvent", "DeadLetter", "ParsedEvent"]
    assert outputs[1].detail == "parser error: RuntimeError: 'a bug in the parser'"


def test_an_offset_gap_passes_parse_and_enrichment_and_becomes_the_gap_again() -> None:
    gap = OffsetGap(SourcePosition("in", 0, 9, 5))
    [skipped] = _parse([gap])
    assert isinstance(skipped, SkippedOffsets) and skipped.source == gap.source
    for lists in (False, True):
        outputs, batches = _enrich([skipped], lists=lists, batch_size=20)
        assert outputs == [skipped] and batches == []        # passed through like a dead letter
    assert RecordEncoder(CONTRACT, "out", "dlq")(skipped) == gap   # nothing to write: the writer acks the gap


def _parse(records: list) -> list:
    """The one list the parse step makes of `records` (one batch), which keeps their order."""
    run = uuid.uuid4().hex
    with beam.Pipeline(options=PipelineOptions(FNAPI)) as p:
        p | beam.Create([records], reshuffle=False) | ParseEvents(CONTRACT.schema) | beam.ParDo(_Collect(run))
    [outputs] = _OUTPUTS.pop(run)
    assert [o.source for o in outputs] == [r.source if isinstance(r, OffsetGap) else r.position for r in records]
    return outputs


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
