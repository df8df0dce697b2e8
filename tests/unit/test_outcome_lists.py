"""`OutcomeListCoder`: the coder of `ThrottledEnrichment(lists=True)`'s outputs. Beam samples the
size of a step's outputs by estimating each sampled element's encoded size; for a list of
outcomes that meant pickling every outcome of the sampled list. The estimate now pickles a few
and scales, and the bytes are Beam's list coder's, as before."""
from __future__ import annotations

import pickle
from typing import Any

import apache_beam as beam
from apache_beam.runners.pipeline_context import PipelineContext

from transforms.control.settings import ThrottleSettings
from transforms.enrichment.outcomes import Enriched, Failed, OutcomeList, OutcomeListCoder
from transforms.enrichment.transform import ThrottledEnrichment


class Counted:
    """An element that counts how often it is pickled."""
    pickled = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> tuple[Any, ...]:
        Counted.pickled += 1
        return (Counted, (self.n,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counted) and other.n == self.n


def _outcomes(n: int) -> list[Any]:
    return [Enriched(Counted(i), (0.5, "approve"), 1, 20.0) if i % 10 else Failed(Counted(i), "deadline", "d", 3)
            for i in range(n)]


def test_estimating_a_list_of_outcomes_pickles_a_few_of_them_not_each() -> None:
    outcomes = _outcomes(100)
    Counted.pickled = 0
    estimate = OutcomeListCoder().estimate_size(outcomes)
    assert Counted.pickled <= 4
    actual = len(OutcomeListCoder().encode(outcomes))
    assert 0.5 * actual <= estimate <= 2 * actual


def test_outcome_lists_are_encoded_as_beams_list_coder_encodes_them() -> None:
    outcomes = _outcomes(25)
    beams = beam.coders.ListCoder(beam.coders.FastPrimitivesCoder())
    coder = OutcomeListCoder()
    assert coder.encode(outcomes) == beams.encode(outcomes)
    assert coder.decode(coder.encode(outcomes)) == outcomes
    for short in ([], outcomes[:1], outcomes[:4]):
        assert coder.estimate_size(short) == beams.estimate_size(short)
    assert pickle.loads(pickle.dumps(coder)) == coder
    assert beam.coders.registry.get_coder(OutcomeList) == coder


def test_the_transforms_list_outputs_are_encoded_as_outcome_lists() -> None:
    class Echo:
        def __call__(self, batch: list[Any]) -> list[Any]:
            return batch

    p = beam.Pipeline()
    _ = (p | beam.Create([[1, 2]], reshuffle=False)
         | ThrottledEnrichment(Echo(), ThrottleSettings(), timestamp_of=lambda e: 0, lists=True))
    proto = p.to_runner_api()
    step = next(t for t in proto.components.transforms.values() if t.unique_name.endswith("/EnrichBatches"))
    (output,) = step.outputs.values()
    coder = PipelineContext(proto.components).coders.get_by_id(proto.components.pcollections[output].coder_id)
    assert coder == OutcomeListCoder()
