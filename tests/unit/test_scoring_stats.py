"""Exact counters and per-transaction bookkeeping."""
from testbed.scoring.stats import Stats


def test_attempts_acceptances_and_duplicates() -> None:
    stats = Stats()
    stats.record_attempt(["a", "b", "a"])
    stats.record_accepted(["a", "b", "a"], latency_ms=10)
    stats.record_attempt(["a", "c"])  # e.g. rejected afterwards
    stats.record_attempt(["c"])
    stats.record_accepted(["c"], latency_ms=30)
    assert stats.txn_attempts() == {"a": 3, "b": 1, "c": 2}
    snap = stats.snapshot()
    assert (snap["attempted_items"], snap["accepted_requests"], snap["accepted_items"]) == (6, 2, 4)
    assert (snap["unique_txns"], snap["duplicate_txn_scores"]) == (3, 1)
    assert (snap["latency_p50_ms"], snap["latency_p99_ms"], snap["latency_samples"]) == (10, 30, 2)


def test_idempotency_keys_count_repeats_only() -> None:
    stats = Stats()
    for key in ["k1", "k2", "k1", "k1"]:
        stats.record_key(key)
    assert stats.snapshot()["duplicate_idempotency_keys"] == 2


def test_reset_zeroes_everything() -> None:
    stats = Stats()
    stats.record_attempt(["a"])
    stats.record_accepted(["a"], 1.0)
    stats.reject("rate_limit")
    stats.record_key("k")
    stats.reset()
    snap = stats.snapshot()
    assert snap["rejected"]["rate_limit"] == 0
    assert (snap["accepted_requests"], snap["unique_txns"], snap["latency_p50_ms"]) == (0, 0, None)
    assert stats.txn_attempts() == {}
    stats.record_key("k")
    assert stats.snapshot()["duplicate_idempotency_keys"] == 0


def test_percentiles_are_nearest_rank() -> None:
    stats = Stats()
    for ms in range(1, 101):
        stats.record_attempt([f"t{ms}"])
        stats.record_accepted([f"t{ms}"], float(ms))
    snap = stats.snapshot()
    assert (snap["latency_p50_ms"], snap["latency_p99_ms"]) == (50.0, 99.0)
