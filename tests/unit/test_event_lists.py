"""The coders of the job's lists: `EventListCoder` (what crosses to the stateful enrichment step
comes back exactly as it was, whatever it holds) and `RecordBatchCoder` (what the reader emits);
the job's PCollections are encoded with them."""
from __future__ import annotations

import datetime
import decimal
import json
import pickle

import apache_beam as beam
from apache_beam.runners.pipeline_context import PipelineContext

from pipelines.enrich_payments import default_enrichment
from pipelines.options import EnrichPaymentsOptions, parse_options
from transforms.contract.loader import DEFAULT_CONTRACT, load_contract
from transforms.contract.schema import Event
from transforms.events import _DECODER, DeadLetter, EventList, EventListCoder, ParsedEvent, SkippedOffsets
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.read import ReadFromKafka
from transforms.kafka.records import KafkaRecord, OffsetGap, RecordBatchCoder, SourcePosition

CONTRACT = load_contract(DEFAULT_CONTRACT)


def _parsed(i: int, *values: object) -> ParsedEvent:
    values = values or (f"t{i}", "acct-1", "card", "shop", 10.5, "EUR", "2026-01-01T00:00:00Z")
    return ParsedEvent(Event(tuple(values), f"t{i}", "acct-1"), b'{"x":1}', SourcePosition("in", 1, i, i - 1),
                       1_700_000_000_000 + i, b"k" if i % 2 else None)


def _letter(i: int) -> DeadLetter:
    return DeadLetter("invalid_event", "invalid JSON", "parse", b"{", SourcePosition("in", 1, i, i))


def round_trip(elements: list[object]) -> list[object]:
    """`elements` through the coder, checked to come back as they were, of the same types."""
    coder = EventListCoder()
    back = coder.decode(coder.encode(elements))
    assert [type(e) for e in back] == [type(e) for e in elements]
    assert repr(back) == repr(elements)   # repr tells 1 from 1.0, a tuple from a list, a date from its string
    return back


def test_parsed_events_travel_as_messagepack_alone() -> None:
    events = [_parsed(i) for i in range(1, 101)]
    assert round_trip(events) == events
    assert _DECODER.decode(EventListCoder().encode(events))[1] == b""   # nothing pickled


def test_dead_letters_and_skipped_offsets_keep_their_places_among_the_events() -> None:
    gap = SkippedOffsets.of(OffsetGap(SourcePosition("in", 1, 9, 8)))
    for elements in ([_letter(0), _parsed(1), _parsed(2)], [_parsed(1), _letter(2), _parsed(3), gap],
                     [_letter(0), gap], [_parsed(1), _parsed(2), gap], []):
        assert round_trip(elements) == elements


def test_values_messagepack_cannot_hold_as_they_are_come_back_as_they_were() -> None:
    exotic = [decimal.Decimal("1.50"), datetime.date(2026, 1, 1), (1, 2), 2**80, -(2**70), "\ud800", float("nan"),
              {"k": (1,)}, [datetime.datetime(2026, 1, 1, 12)]]
    elements: list[object] = [_parsed(1)]
    for i, value in enumerate(exotic, start=2):
        elements.append(_parsed(i, f"t{i}", value))
        elements.append(_parsed(100 + i))
    back = round_trip(elements)
    assert back[1].event.values[1] == decimal.Decimal("1.50")
    assert round_trip([_parsed(1, 2**64, True, 1, 1.0, -0.0, None, {"a": [1, {"b": None}]})])[0].event.values[0] == 2**64


def test_the_coder_pickles_and_compares_as_the_registry_needs() -> None:
    assert pickle.loads(pickle.dumps(EventListCoder())) == EventListCoder()
    assert beam.coders.registry.get_coder(EventList) == EventListCoder()


def output_coder(p: beam.Pipeline, step: str) -> beam.coders.Coder:
    """The coder of the output of the step whose name ends with `step`."""
    proto = p.to_runner_api()
    transform = next(t for t in proto.components.transforms.values() if t.unique_name.endswith(step))
    (output,) = transform.outputs.values()
    return PipelineContext(proto.components).coders.get_by_id(proto.components.pcollections[output].coder_id)


def test_the_jobs_keyed_boundary_is_encoded_as_event_lists() -> None:
    opts = parse_options(["--service_url=http://127.0.0.1:9/score"]).view_as(EnrichPaymentsOptions)
    p = beam.Pipeline()
    _ = p | beam.Create([[_parsed(1)]], reshuffle=False) | default_enrichment(opts, CONTRACT)
    assert output_coder(p, "/KeyByShard").value_coder() == EventListCoder()


def _record(offset: int, key: bytes | None = b"k", value: bytes | None = b"{}") -> KafkaRecord:
    return KafkaRecord(SourcePosition("in", 3, offset, offset - 1), key, value, 1_700_000_000_000 + offset)


def test_record_batches_come_back_as_they_were_with_their_gaps_in_place() -> None:
    gap = OffsetGap(SourcePosition("in", 3, 9, 8))
    coder = RecordBatchCoder()
    for batch in ([_record(1), _record(2, None, None), _record(3, b"", b"")], [_record(1), gap], [gap],
                  [gap, _record(5), gap, _record(7)], []):
        back = coder.decode(coder.encode(batch))
        assert back == batch and [type(r) for r in back] == [type(r) for r in batch]


def test_the_readers_batches_are_encoded_as_record_batches() -> None:
    p = beam.Pipeline()
    _ = p | ReadFromKafka(KafkaConnection("unused:9092", group_id="g"), "in", bounded=True)
    assert output_coder(p, "/ReadPartitions") == RecordBatchCoder()


def test_the_coder_benchmark_reports_both_coders(capsys) -> None:
    from testbed.bench.coder import main
    assert main(["--events", "5", "--pairs", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["event_list_coder_us"] > 0 and report["beam_default_us"] > 0 and report["ratio_median"] > 0


def test_a_size_estimate_of_event_lists_neither_decodes_nor_pickles_them(monkeypatch) -> None:
    """Beam estimates the size of sampled lists; the check that events come back exactly (a decode
    and a comparison) is for what is sent, not for an estimate."""
    import transforms.events as events_module

    class CountingDecoder:
        calls = 0

        def decode(self, data: bytes) -> object:
            CountingDecoder.calls += 1
            return _DECODER.decode(data)

    events = [_parsed(i) for i in range(1, 101)]
    exact = len(EventListCoder().encode(events))
    monkeypatch.setattr(events_module, "_DECODER", CountingDecoder())
    assert EventListCoder().estimate_size(events) == exact
    assert CountingDecoder.calls == 0
    mixed = [_letter(0), *events]
    assert EventListCoder().estimate_size(mixed) > exact   # a dead letter among them is counted too
