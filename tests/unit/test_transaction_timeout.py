"""The exactly-once writer's transaction timeout covers the longest wait of a batch."""
from __future__ import annotations

import pytest

from pipelines.options import ConfigError, EnrichPaymentsOptions, parse_options, validate
from transforms.control.settings import DEFAULTS
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.exactly_once import WriteToKafkaExactlyOnce, transaction_timeout_ms


def test_the_default_writer_outlasts_the_default_deadline() -> None:
    """Before: 120 s against a 300 s deadline - an outage over two minutes aborted the transaction
    and was reported as a fencing."""
    writer = WriteToKafkaExactlyOnce(KafkaConnection("k:9092", group_id="g"))
    assert writer._timeout_ms >= DEFAULTS.deadline_s * 1000


@pytest.mark.parametrize(("deadline_s", "expected"), [(10, 120_000), (300, 360_000), (1000, 1_060_000)])
def test_timeout_follows_the_deadline(deadline_s: float, expected: int) -> None:
    assert transaction_timeout_ms(deadline_s, {}) == expected


def test_a_given_timeout_is_kept_when_it_covers_the_deadline_and_refused_when_not() -> None:
    assert transaction_timeout_ms(300, {"transaction.timeout.ms": "600000"}) == 600_000
    with pytest.raises(ValueError, match="transaction.timeout.ms=200000 is shorter than a batch may wait"):
        transaction_timeout_ms(300, {"transaction.timeout.ms": "200000"})


def test_the_job_refuses_a_transaction_timeout_its_deadline_outlasts() -> None:
    opts = parse_options(["--delivery=exactly_once", "--batch_deadline=300",
                          "--kafka_property=transaction.timeout.ms=120000"]).view_as(EnrichPaymentsOptions)
    with pytest.raises(ConfigError, match="--kafka_property transaction.timeout.ms=120000 is shorter") as caught:
        validate(opts)
    assert "\n" not in str(caught.value)
    at_least_once = parse_options(["--batch_deadline=300", "--kafka_property=transaction.timeout.ms=120000"])
    validate(at_least_once.view_as(EnrichPaymentsOptions))
