"""The end-of-run table stays short at any partition count and says what a run did."""
from __future__ import annotations

from pipelines.summary import RunSummary
from transforms.monitoring.catalogue import CATALOGUE


def _summary(partitions: int) -> RunSummary:
    key = lambda name, **labels: CATALOGUE[name].beam_key(**labels)  # noqa: E731
    s = RunSummary(wall_s=18.0)
    s.counters = {key("events_in"): 66_667, key("events_scored"): 66_600, key("score_dead_letters"): 60,
                  key("parse_dead_letters"): 7, key("records_written"): 66_667, key("batches"): 6_667,
                  key("requests", outcome="ok"): 6_667, key("requests", outcome="429"): 120,
                  key("throttled_ms"): 9_000, key("offset_commits"): 3 * partitions}
    s.distributions = {key("batch_size"): dict(count=6_667, sum=66_667, min=1, max=10, mean=10.0),
                       key("request_latency_ms"): dict(count=6_787, sum=135_740, min=3, max=240, mean=20.0)}
    s.gauges = {key("committed_offset", topic="payments", partition=p): 1000 + p for p in range(partitions)}
    s.gauges[key("in_flight")] = 0
    return s


def test_the_table_has_at_most_twenty_rows_at_any_partition_count() -> None:
    for partitions in (1, 8, 128):
        rows = dict(_summary(partitions).rows())
        assert len(rows) <= 20
        assert rows["committed: payments"].startswith(f"{partitions} partitions")
        assert "lowest: partition 0 at 1,000" in rows["committed: payments"]
        assert not [name for name in rows if "in_flight" in name or "in-flight" in name]   # always 0 at the end


def test_throttled_time_is_a_share_of_wall_time_and_zero_rows_are_left_out() -> None:
    rows = dict(_summary(8).rows())
    assert rows["time throttled"] == "9.0 s (50% of wall time)"
    assert rows["requests"] == "ok 6,667, 429 120"
    assert rows["dead letters"] == "67 (parse 7, scoring 60)"
    assert "transactions" not in rows and "delivery errors" not in rows
