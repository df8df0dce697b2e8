"""Client configs: memory caps, commit settings, security pass-through, no secrets in logs."""
from __future__ import annotations

import pickle

import pytest
from confluent_kafka import Consumer, Producer

from transforms.kafka.connection import KafkaConnection, consumer_config, parse_properties, producer_config, redacted

SECURE = KafkaConnection(
    "broker-1:9093,broker-2:9093",
    group_id="scoring",
    security={
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "hunter2",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.key.password": "k3y",
    },
    properties={"client.id": "enrich", "fetch.wait.max.ms": "100"},
)


def test_consumer_config_caps_prefetch_and_disables_auto_commit() -> None:
    config = consumer_config(KafkaConnection("localhost:9092", group_id="g"))
    assert config["queued.max.messages.kbytes"] == 2048
    assert config["queued.min.messages"] == 1000
    assert config["max.partition.fetch.bytes"] == 1024 * 1024
    assert config["fetch.max.bytes"] == 2 * 1024 * 1024
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["enable.partition.eof"] is True
    assert config["group.id"] == "g"
    Consumer(config).close()  # librdkafka accepts the combination


def test_producer_config_is_idempotent_and_bounded() -> None:
    config = producer_config(KafkaConnection("localhost:9092"))
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["linger.ms"] == 5
    assert config["queue.buffering.max.kbytes"] == 16 * 1024
    assert config["queue.buffering.max.messages"] == 20_000
    Producer(config).flush(0)


def test_security_and_extra_properties_pass_through_to_both_clients() -> None:
    for config in (consumer_config(SECURE), producer_config(SECURE)):
        assert config["bootstrap.servers"] == "broker-1:9093,broker-2:9093"
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.password"] == "hunter2"
        assert config["ssl.ca.location"] == "/etc/ca.pem"
        assert config["client.id"] == "enrich"


def test_extra_properties_override_defaults() -> None:
    conn = KafkaConnection("b:9092", group_id="g", properties={"queued.min.messages": "10"})
    assert consumer_config(conn)["queued.min.messages"] == "10"


def test_unknown_security_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="sasl.oauthbearer.config"):
        KafkaConnection("b:9092", security={"sasl.oauthbearer.config": "x"})


def test_consumer_needs_a_group() -> None:
    with pytest.raises(ValueError, match="group"):
        consumer_config(KafkaConnection("b:9092"))


def test_secrets_never_appear_in_redacted_output_or_repr() -> None:
    shown = redacted(consumer_config(SECURE))
    assert shown["sasl.password"] == "***"
    assert shown["ssl.key.password"] == "***"
    assert shown["sasl.username"] == "svc"
    assert "hunter2" not in repr(SECURE) and "k3y" not in repr(SECURE)
    assert pickle.loads(pickle.dumps(SECURE)) == SECURE


def test_parse_properties() -> None:
    assert parse_properties(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError):
        parse_properties(["novalue"])
