"""Deterministic stand-in for the fraud model, shared by the service and the tests.

The score is a pure function of ``txn_id`` so that tests and benchmarks can check
every scored record without talking to the service, and so that re-scoring a
transaction (a retry or a replay) always yields the same answer.
"""
from __future__ import annotations

import hashlib

MODEL_VERSION = "demo-1"
DECLINE_AT = 0.95
REVIEW_AT = 0.80


def decide(score: float) -> str:
    """Map a score in [0, 1) to the decision the pipeline acts on."""
    if score >= DECLINE_AT:
        return "decline"
    if score >= REVIEW_AT:
        return "review"
    return "approve"


def score_txn(txn_id: str) -> tuple[float, str]:
    """Return ``(score, decision)``: the first 32 bits of sha256(txn_id) scaled to [0, 1).

    ``int.from_bytes(digest[:4])`` equals ``int(hexdigest[:8], 16)`` and is cheaper;
    the service calls this once per item on its hot path.
    """
    first_32_bits = int.from_bytes(hashlib.sha256(txn_id.encode("utf-8")).digest()[:4], "big")
    score = round(first_32_bits / 2**32, 6)
    return score, decide(score)
