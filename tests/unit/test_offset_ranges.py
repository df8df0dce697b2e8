"""OffsetRangeSet: merging and the committed-offset rule (never skip an unacked offset)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.kafka.offset_ranges import OffsetRangeSet, PendingRanges


def test_add_merges_overlapping_and_touching_ranges() -> None:
    s = OffsetRangeSet()
    s.add(10, 20)
    s.add(30, 40)
    s.add(20, 25)  # touches the first
    assert s.ranges == ((10, 25), (30, 40))
    s.add(24, 31)  # bridges both
    assert s.ranges == ((10, 40),)
    s.add(0, 5)
    s.add(50, 60)
    s.add(12, 13)  # inside
    assert s.ranges == ((0, 5), (10, 40), (50, 60))


def test_add_ignores_empty_and_rejects_inverted_ranges() -> None:
    s = OffsetRangeSet([(5, 5)])
    assert len(s) == 0
    with pytest.raises(ValueError):
        s.add(3, 2)


def test_advance_moves_over_the_contiguous_run_only() -> None:
    s = OffsetRangeSet([(12, 15), (5, 10)])
    assert s.advance(5) == 10
    assert s.ranges == ((12, 15),)
    assert s.advance(10) == 10  # 10 and 11 are not acknowledged yet
    s.add(10, 12)
    assert s.advance(10) == 15
    assert len(s) == 0


def test_advance_drops_ranges_below_base_and_handles_straddling() -> None:
    s = OffsetRangeSet([(0, 3), (4, 8), (9, 10)])
    assert s.advance(6) == 8  # duplicate ack of already committed 4..5
    assert s.ranges == ((9, 10),)
    assert OffsetRangeSet([(0, 3)]).advance(7) == 7


def _chunks(total: int, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({c for c in cuts if 0 < c < total} | {0, total})
    return list(zip(points, points[1:]))


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    base=st.integers(min_value=0, max_value=10**12),
    total=st.integers(min_value=1, max_value=400),
)
def test_committed_offset_never_skips_an_unacknowledged_offset(
        data: st.DataObject, base: int, total: int) -> None:
    cuts = data.draw(st.lists(st.integers(min_value=1, max_value=total - 1), max_size=60)
                     if total > 1 else st.just([]))
    ranges = [(base + s, base + e) for s, e in _chunks(total, cuts)]
    order = data.draw(st.permutations(ranges))
    # Some acks are delivered twice (bundle retries re-produce records).
    duplicates = data.draw(st.lists(st.sampled_from(ranges), max_size=5))

    pending = OffsetRangeSet()
    committed = base
    acked: set = set()
    for start, end in list(order) + duplicates:
        pending.add(start, end)
        acked.update(range(start, end))
        new = pending.advance(committed)
        assert new >= committed
        # Every offset below the committed one has been acknowledged.
        assert all(o in acked for o in range(base, new))
        committed = new
        assert all(r_start > committed for r_start, _ in pending.ranges)
    assert committed == base + total
    assert len(pending) == 0


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=20)),
                max_size=80),
       st.lists(st.tuples(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=20)),
                max_size=5))
def test_add_all_holds_what_adding_each_range_in_turn_holds(spans: list, already: list) -> None:
    ranges = [(start, start + length) for start, length in spans]
    one_by_one, at_once = OffsetRangeSet(), OffsetRangeSet()
    for start, length in already:
        one_by_one.add(start, start + length)
        at_once.add(start, start + length)
    for start, end in ranges:
        one_by_one.add(start, end)
    at_once.add_all(ranges)
    assert at_once.ranges == one_by_one.ranges


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=3)),
                max_size=120))
def test_pending_ranges_merge_to_what_the_set_holds_and_keep_few_waiting(spans: list) -> None:
    class Small(PendingRanges):
        MERGE_EVERY = 7

    pending, reference = Small(), OffsetRangeSet()
    for start, length in spans:
        pending.add(start, start + length)
        reference.add(start, start + length)
        assert len(pending._waiting) < Small.MERGE_EVERY
    assert pending.merged().ranges == reference.ranges
