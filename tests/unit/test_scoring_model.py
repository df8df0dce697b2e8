"""The deterministic model: spec formula, thresholds and stability."""
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.scoring.model import MODEL_VERSION, decide, score_txn


def spec_score(txn_id: str) -> float:
    """The brief's formula, written the obvious way."""
    return round(int(hashlib.sha256(txn_id.encode("utf-8")).hexdigest()[:8], 16) / 2**32, 6)


@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_score_matches_the_spec_formula(txn_id: str) -> None:
    score, decision = score_txn(txn_id)
    assert score == spec_score(txn_id)
    assert 0.0 <= score <= 1.0
    assert decision == decide(score)


def test_known_values_do_not_drift() -> None:
    # Pinned so a change of hashing or rounding is a visible, deliberate diff.
    assert score_txn("a") == (0.791374, "approve")
    assert score_txn("txn-000001") == (spec_score("txn-000001"), decide(spec_score("txn-000001")))
    assert MODEL_VERSION == "demo-1"


@pytest.mark.parametrize(
    ("score", "decision"),
    [
        (0.0, "approve"), (0.799999, "approve"), (0.8, "review"),
        (0.949999, "review"), (0.95, "decline"), (1.0, "decline"),
    ],  # fmt: skip
)
def test_decision_thresholds(score: float, decision: str) -> None:
    assert decide(score) == decision


def test_all_three_decisions_occur() -> None:
    decisions = {score_txn(f"txn-{i}")[1] for i in range(200)}
    assert decisions == {"approve", "review", "decline"}
