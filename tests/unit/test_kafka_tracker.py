"""The growable tracker of the unbounded partition read, through the SDK's split API.

(Reading real partitions while they are split: tests/integration/test_kafka_io.py.)
"""
from __future__ import annotations

import pytest
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.runners.sdf_utils import ThreadsafeRestrictionTracker

from transforms.kafka.tracker import UNBOUNDED_STOP, GrowableOffsetRestrictionTracker, PartitionRange


def tracker(start: int = 100, end: int | None = 1_000, claimed_to: int | None = 149) -> GrowableOffsetRestrictionTracker:
    """Unbounded from `start`, offsets up to `claimed_to` claimed, the partition's end estimated at `end`."""
    t = GrowableOffsetRestrictionTracker(PartitionRange("t", 0, start, UNBOUNDED_STOP), lambda: end)
    for offset in range(start, (claimed_to or start - 1) + 1):
        assert t.try_claim(offset)
    return t


def test_the_sdk_tracker_splits_an_unbounded_range_past_any_real_offset() -> None:
    """Why the growable tracker exists: the residual of a 0.5 split starts near 2**62."""
    t = OffsetRestrictionTracker(OffsetRange(100, UNBOUNDED_STOP))
    for offset in range(100, 150):
        t.try_claim(offset)
    _, residual = t.try_split(0.5)
    assert residual.start > 2**61


@pytest.mark.parametrize("fraction, split_at", [
    (0.0, 150),          # a checkpoint: right after the last claim
    (0.001, 150),        # at least one offset on the primary side
    (0.1, 149 + 85),
    (0.5, 149 + 425),
    (0.999, 149 + 850),
    (1.0, 1_000),        # the whole known backlog stays with the primary
])
def test_a_split_at_any_fraction_lands_between_the_next_offset_and_the_estimated_end(
        fraction: float, split_at: int) -> None:
    t = tracker()
    primary, residual = t.try_split(fraction)
    assert (primary.start, primary.stop) == (100, split_at)
    assert (residual.start, residual.stop) == (split_at, UNBOUNDED_STOP)
    assert isinstance(residual, PartitionRange) and (residual.topic, residual.partition) == ("t", 0)
    assert t.is_bounded() and t.current_restriction() == primary
    assert t.try_claim(150) == (split_at > 150)


@pytest.mark.parametrize("end", [None, 0, 120, 150])
def test_an_unknown_or_stale_end_splits_at_the_next_offset(end: int | None) -> None:
    _, residual = tracker(end=end).try_split(0.5)
    assert residual.start == 150


def test_nothing_claimed_yet_splits_from_the_start() -> None:
    primary, residual = tracker(claimed_to=None).try_split(0.5)
    assert (primary.start, primary.stop, residual.start) == (100, 549, 549)   # 99 + 901 x 0.5


def test_the_residual_grows_again_and_a_primary_splits_as_a_bounded_range() -> None:
    t = tracker()
    _, residual = t.try_split(0.5)                       # [100, 574) + [574, inf)
    assert t.try_split(0.5) == (OffsetRange(100, 361), OffsetRange(361, 574))   # bounded: Beam's arithmetic
    again = GrowableOffsetRestrictionTracker(residual, lambda: 2_000)
    assert not again.is_bounded()
    assert again.try_split(0.5)[1].start == 573 + 1_427 // 2


def test_after_a_checkpoint_no_further_split() -> None:
    t = tracker()
    assert t.try_split(0)[1].start == 150
    assert t.try_split(0.5) is None
    t.check_done()                                       # [100, 150) fully claimed


def test_progress_is_measured_against_the_estimated_end() -> None:
    progress = tracker().current_progress()
    assert (progress.completed_work, progress.remaining_work) == (50, 850)
    caught_up = tracker(end=150).current_progress()
    assert (caught_up.completed_work, caught_up.remaining_work) == (50, 0)
    assert tracker(end=None, claimed_to=None).current_progress().fraction_completed == 0.0   # no 0/0


def test_the_harness_wrapper_checkpoints_through_it() -> None:
    """`defer_remainder` (the reader's self-checkpoint) is `try_split(0)` under the SDK's lock."""
    wrapped = ThreadsafeRestrictionTracker(tracker())
    wrapped.defer_remainder()
    residual, _ = wrapped.deferred_status()
    assert (residual.start, residual.stop) == (150, UNBOUNDED_STOP)
    wrapped.check_done()
