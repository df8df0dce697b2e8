"""Fault parsing and windows on an explicit clock."""
import pytest

from testbed.scoring.faults import Fault, FaultError, FaultSchedule, parse_fault


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("outage", "must be a JSON object"),
        ({"kind": "outage"}, "needs 'duration_s'"),
        ({"kind": "capacity", "duration_s": 1}, "needs 'factor'"),
        ({"kind": "latency", "duration_s": 1, "factor": 0}, "'factor' must be > 0"),
        ({"kind": "outage", "duration_s": 0}, "'duration_s' must be > 0"),
        ({"kind": "outage", "duration_s": 1, "start_s": -1}, "'start_s' must be >= 0"),
        ({"kind": "outage", "duration_s": "1"}, "must be a finite number"),
        ({"kind": "outage", "duration_s": 1, "until": 3}, "unknown fault field(s): until"),
    ],
)
def test_bad_faults_are_refused(obj: object, message: str) -> None:
    with pytest.raises(FaultError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_fault(obj)


def test_outage_defaults_start_now_and_ignores_factor() -> None:
    assert parse_fault({"kind": "outage", "duration_s": 2}) == Fault("outage", 0.0, 2.0, 1.0)


def test_windows_open_and_close_on_time_and_factors_multiply() -> None:
    schedule = FaultSchedule()
    schedule.add(Fault("capacity", start_s=1, duration_s=2, factor=0.5), origin=100.0)
    schedule.add(Fault("capacity", start_s=2, duration_s=2, factor=0.5), origin=100.0)
    schedule.add(Fault("latency", start_s=0, duration_s=1, factor=3), origin=100.0)
    assert schedule.state(100.5).capacity_factor == 1.0
    assert schedule.state(100.5).latency_factor == 3.0
    assert schedule.state(101.0).capacity_factor == 0.5
    assert schedule.state(102.5).capacity_factor == 0.25
    assert schedule.state(103.5).capacity_factor == 0.5
    assert schedule.state(104.0).capacity_factor == 1.0
    assert schedule.describe(104.0) == []


def test_outage_reports_the_longest_remaining_window() -> None:
    schedule = FaultSchedule()
    schedule.add(Fault("outage", 0, 3), origin=0.0)
    schedule.add(Fault("outage", 1, 1), origin=0.0)
    assert schedule.state(1.5).outage_remaining_s == 1.5
    assert [f["kind"] for f in schedule.describe(1.5)] == ["outage", "outage"]
    assert schedule.state(3.0).outage_remaining_s == 0.0
