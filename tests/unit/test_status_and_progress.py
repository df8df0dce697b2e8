"""Verdicts of `pipelines.status` and the progress line, from synthetic Kafka samples."""
from __future__ import annotations

import io

import pytest

from pipelines.progress import ProgressReporter
from pipelines.status import CAUGHT_UP, DRAINING, GROWING, HOLDING, IDLE, STALLED, assess, overall, render, verdict
from tests.unit.fake_clock import FakeClock
from transforms.kafka.lag import PartitionLag
from transforms.monitoring.telemetry import Telemetry


def lag(committed, end, low=0, ts_ms=None, partition=0) -> PartitionLag:
    return PartitionLag("t", partition, committed, low, end, ts_ms)


@pytest.mark.parametrize("first, second, expected", [
    (lag(50, 100), lag(80, 110), DRAINING),     # lag 50 -> 30
    (lag(50, 100), lag(60, 110), HOLDING),      # lag 50 -> 50, commits moving
    (lag(50, 100), lag(55, 120), GROWING),      # lag 50 -> 65, commits moving
    (lag(50, 100), lag(50, 100), STALLED),      # commits not moving
    (lag(50, 100), lag(50, 130), STALLED),      # stalled beats growing
    (lag(100, 100), lag(100, 100), IDLE),
    (lag(100, 100), lag(130, 130), CAUGHT_UP),
    (lag(None, 100), lag(None, 100), STALLED),  # never committed: counted from the log start
])
def test_verdicts(first, second, expected) -> None:
    assert verdict(first, second) == expected


def test_assess_reports_lag_age_and_drain_rate_per_partition() -> None:
    now = 1_000.0
    statuses = assess([lag(10, 100), lag(0, 50, partition=1)],
                      [lag(40, 100, ts_ms=940_000), lag(0, 50, ts_ms=400_000, partition=1)], 10.0, now)
    assert [(s.lag, s.lag_change, s.drain_per_s, s.verdict) for s in statuses] == [
        (60, -30, 3.0, DRAINING), (50, 0, 0.0, STALLED)]
    assert statuses[0].oldest_age_s == pytest.approx(60.0)
    assert statuses[1].oldest_age_s == pytest.approx(600.0)
    assert overall(statuses) == STALLED
    text = render("t", "g", 10.0, statuses)
    assert "lag 110" in text and text.endswith("-> stalled")


def test_position_falls_back_to_log_start_when_committed_is_out_of_range() -> None:
    assert lag(None, 100, low=20).lag == 80
    assert lag(5, 100, low=20).lag == 80        # committed offset deleted by retention
    assert lag(100, 100).oldest_age_s(0.0) == 0.0


class FakeProbe:
    def __init__(self, lags: list[int]) -> None:
        self.lags = lags

    def sample(self, with_age: bool = True) -> list[PartitionLag]:
        return [lag(0, self.lags.pop(0))]

    def close(self) -> None:
        pass


def test_progress_line_reports_this_run_rates_throttled_share_and_eta() -> None:
    clock, telemetry, out = FakeClock(), Telemetry(), io.StringIO()
    telemetry.inc("events_in", 7000)                      # an earlier run in the same process
    telemetry.inc("records_written", 6000)
    reporter = ProgressReporter(5, FakeProbe([1000, 600]), telemetry, out=out, clock=clock.now)
    telemetry.inc("events_in", 500)
    telemetry.inc("records_written", 480)
    telemetry.inc("parse_dead_letters", 3)
    telemetry.inc("events_scored", 397)
    telemetry.inc("requests", 90, outcome="ok")
    telemetry.inc("requests", 10, outcome="429")
    telemetry.inc("throttled_ms", 2500)
    telemetry.set("in_flight", 7)
    telemetry.set("in_flight_limit", 32)
    telemetry.set("rate_limit_rps", 55.5)
    clock.advance(10)
    first = reporter.report()
    assert "consumed 500 written 480 dead 3" in first and "done 40/s" in first and "throttled 25%" in first
    assert "in-flight 7/32" in first and "rate 55.5 rps" in first and "429 10.0%" in first
    assert "lag 1,000 | ETA 25s" in first                 # 400 completed in 10 s: 1,000 / 40
    telemetry.inc("records_written", 400)                 # written rises as Kafka acknowledges
    telemetry.inc("events_scored", 200)
    clock.advance(10)
    second = reporter.report()
    assert "written 880" in second and "done 20/s" in second and "throttled 0%" in second
    assert "lag 600 | ETA 20s" in second                  # 600 completed in 20 s: 600 / 30
    assert out.getvalue().splitlines() == [first, second]  # not a TTY: one plain line per report
