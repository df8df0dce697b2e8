"""Exact counters the tests and the benchmark compare against what the pipeline saw.

Per-transaction state lives in one dict, ``txn_id -> attempts << 1 | accepted``,
because the benchmark pushes a few million distinct ids through one process:
that costs roughly 150 bytes per id (≈450 MB for 3 M), and nothing is evicted.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

REASONS = ("rate_limit", "concurrency", "outage", "bad_request", "unauthorized", "too_large")
LATENCY_WINDOW = 10_000


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list, in ms rounded to µs."""
    if not ordered:
        return None
    return round(ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1], 3)


class Stats:
    """Counters for /stats; :meth:`reset` zeroes all of them.

    ``attempted_requests`` counts every POST /score, so once no request is in
    flight it equals ``accepted_requests + sum(rejected.values())``. Latency
    percentiles cover the last LATENCY_WINDOW accepted requests only.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.attempted_requests = 0
        self.attempted_items = 0
        self.accepted_requests = 0
        self.accepted_items = 0
        self.unique_txns = 0
        self.duplicate_txn_scores = 0
        self.duplicate_idempotency_keys = 0
        self.rejected = dict.fromkeys(REASONS, 0)
        # Unique txns first accepted per client (User-Agent), for fairness between workers.
        self.unique_by_client: dict[str, int] = {}
        self._txns: dict[str, int] = {}
        self._keys: set[str] = set()
        self._latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def record_key(self, key: str) -> None:
        if key in self._keys:
            self.duplicate_idempotency_keys += 1
        else:
            self._keys.add(key)

    def record_attempt(self, txn_ids: list[str]) -> None:
        """A /score body parsed: every id counts as one attempt, whatever happens next."""
        self.attempted_items += len(txn_ids)
        txns = self._txns
        for txn_id in txn_ids:
            txns[txn_id] = txns.get(txn_id, 0) + 2

    def record_accepted(self, txn_ids: list[str], latency_ms: float, client: str = "") -> None:
        self.accepted_requests += 1
        self.accepted_items += len(txn_ids)
        txns = self._txns
        fresh = 0
        for txn_id in txn_ids:
            state = txns[txn_id]
            if state & 1:
                self.duplicate_txn_scores += 1
            else:
                txns[txn_id] = state | 1
                fresh += 1
        self.unique_txns += fresh
        self.unique_by_client[client] = self.unique_by_client.get(client, 0) + fresh
        self._latencies_ms.append(latency_ms)

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def txn_attempts(self) -> dict[str, int]:
        return {txn_id: state >> 1 for txn_id, state in self._txns.items()}

    def snapshot(self) -> dict[str, Any]:
        ordered = sorted(self._latencies_ms)
        return {
            "attempted_requests": self.attempted_requests,
            "attempted_items": self.attempted_items,
            "accepted_requests": self.accepted_requests,
            "accepted_items": self.accepted_items,
            "rejected": dict(self.rejected),
            "unique_txns": self.unique_txns,
            "unique_by_client": dict(self.unique_by_client),
            "duplicate_txn_scores": self.duplicate_txn_scores,
            "duplicate_idempotency_keys": self.duplicate_idempotency_keys,
            "latency_p50_ms": _percentile(ordered, 50),
            "latency_p99_ms": _percentile(ordered, 99),
            "latency_samples": len(ordered),
        }
