"""Preflight reaches Kafka with the job's own client configurations, every --kafka_property
included (no broker needed: the clients are recorded). The same against a real broker:
tests/integration/test_reliability_config.py and test_reliability_security.py."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipelines import preflight
from pipelines.options import ConfigError
from transforms.kafka.connection import KafkaConnection, consumer_config, producer_config

CONN = KafkaConnection("broker:9093", group_id="g", security={"security.protocol": "SSL"},
                       properties={"enable.ssl.certificate.verification": "false", "client.id": "enrich"})


class Recorded:
    """A client that records its configuration; metadata knows the topic "in"."""
    configs: list[dict] = []

    def __init__(self, config: dict) -> None:
        Recorded.configs.append(config)

    def list_topics(self, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics={"in": object()})

    def flush(self, timeout: float) -> int:
        return 0

    def close(self) -> None:
        pass


def test_preflight_uses_the_consumer_and_producer_configurations_of_the_job(monkeypatch) -> None:
    Recorded.configs = []
    monkeypatch.setattr(preflight, "Consumer", Recorded)
    monkeypatch.setattr(preflight, "Producer", Recorded)
    preflight.check_kafka(CONN, ["in"])
    quiet = {"log_level": 0}
    assert Recorded.configs == [{**producer_config(CONN), **quiet}, {**consumer_config(CONN), **quiet}]
    assert all(c["enable.ssl.certificate.verification"] == "false" for c in Recorded.configs)
    with pytest.raises(ConfigError, match="topic\\(s\\) missing on broker:9093: out"):
        preflight.check_kafka(CONN, ["in", "out"])
