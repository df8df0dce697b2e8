"""Throttled time is the union of the waits: overlapping waits count once, never more than wall time."""
from __future__ import annotations

from tests.unit.fake_clock import FakeClock
from tests.unit.test_control import OK, R429, R503, make_throttle, scripted
from transforms.control.wait_time import WaitTime


def test_overlapping_waits_count_once_and_gaps_not_at_all() -> None:
    clock = FakeClock()
    waits = WaitTime(clock)
    waits.begin()
    clock.advance(1.0)
    waits.begin()                   # a second batch waits while the first still does
    clock.advance(2.0)
    waits.end()
    clock.advance(0.5)
    waits.end()                     # 3.5 s of waiting, whatever the number of batches
    clock.advance(10.0)             # nobody waits
    assert waits.take_ms() == 3500
    assert waits.take_ms() == 0


def test_a_wait_in_progress_counts_up_to_the_take_and_fractions_carry_over() -> None:
    clock = FakeClock()
    waits = WaitTime(clock)
    waits.begin()
    clock.advance(0.0004)
    assert waits.take_ms() == 0
    clock.advance(0.0007)
    assert waits.take_ms() == 1     # 1.1 ms so far
    clock.advance(0.0009)
    waits.end()
    assert waits.take_ms() == 1     # 2.0 ms in all: the takes add up to the union


def test_the_throttle_counts_its_backoffs_and_never_more_than_the_elapsed_time() -> None:
    clock = FakeClock()
    throttle = make_throttle(clock)
    started = clock.now()
    out = throttle.call(scripted([R429, R503, OK]))
    assert out.ok and out.attempts == 3
    throttled_ms = throttle.waiting.take_ms()
    assert 0 < throttled_ms <= (clock.now() - started) * 1000 + 1
