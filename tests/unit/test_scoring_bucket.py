"""Token bucket arithmetic on an explicit clock."""
from hypothesis import given
from hypothesis import strategies as st

from testbed.scoring.bucket import TokenBucket


def test_starts_full_and_refuses_when_empty() -> None:
    bucket = TokenBucket(burst=3, now=0.0)
    assert [bucket.try_take(0.0, rate=10) for _ in range(4)] == [True, True, True, False]
    assert bucket.remaining() == 0
    assert bucket.seconds_until_token(10) == 0.1


def test_refills_at_the_rate_given_and_caps_at_burst() -> None:
    bucket = TokenBucket(burst=2, now=0.0)
    bucket.try_take(0.0, 10)
    bucket.try_take(0.0, 10)
    assert not bucket.try_take(0.05, 10)  # half a token
    assert bucket.try_take(0.1, 10)
    bucket.refill(100.0, 10)
    assert bucket.tokens == 2


def test_time_is_banked_at_the_old_rate_before_a_rate_change() -> None:
    bucket = TokenBucket(burst=100, now=0.0)
    bucket.tokens = 0
    bucket.refill(1.0, rate=10)  # caller banks the old rate first
    bucket.refill(2.0, rate=1)
    assert bucket.tokens == 11


def test_charge_goes_negative_only_down_to_the_floor() -> None:
    bucket = TokenBucket(burst=2, now=0.0)
    for _ in range(10):
        bucket.charge(0.5, floor=-2)
    assert bucket.tokens == -2
    assert bucket.remaining() == 0
    assert bucket.seconds_until_token(1) == 3.0
    bucket.refund(10)
    assert bucket.tokens == 2


def test_shrinking_burst_clamps_tokens() -> None:
    bucket = TokenBucket(burst=10, now=0.0)
    bucket.set_burst(4)
    assert bucket.tokens == 4


@given(
    rate=st.floats(0.5, 1000),
    burst=st.floats(1, 50),
    gaps=st.lists(st.floats(0, 0.2), min_size=1, max_size=300),
)
def test_admissions_never_exceed_rate_times_elapsed_plus_burst(rate: float, burst: float, gaps: list[float]) -> None:
    bucket = TokenBucket(burst, now=0.0)
    now = 0.0
    taken = 0
    for gap in gaps:
        now += gap
        taken += bucket.try_take(now, rate)
    assert taken <= rate * now + burst + 1e-9
