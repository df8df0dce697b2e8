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


def test_secrets_come_from_the_environment_or_files_when_a_client_is_made(tmp_path, monkeypatch) -> None:
    """Placeholders travel in the pipeline; the values are read by whoever builds a client (the
    worker), and a rotated file is read again by the next client."""
    (tmp_path / "password").write_text("s3cret\n")
    (tmp_path / "client.properties").write_text("# comment\nssl.key.password = k3y\nother=1\n")
    monkeypatch.setenv("KAFKA_USER", "svc")
    conn = KafkaConnection("b:9093", group_id="g",
                           security={"sasl.username": "${env:KAFKA_USER}",
                                     "sasl.password": f"${{dir:{tmp_path}:password}}",
                                     "ssl.key.password": f"${{file:{tmp_path}/client.properties:ssl.key.password}}"})
    for config in (consumer_config(conn), producer_config(conn)):
        assert (config["sasl.username"], config["sasl.password"], config["ssl.key.password"]) == ("svc", "s3cret", "k3y")
    assert "s3cret" not in pickle.dumps(conn).decode("latin-1")
    (tmp_path / "password").write_text("rotated")
    assert consumer_config(conn)["sasl.password"] == "rotated"


@pytest.mark.parametrize(("value", "message"), [
    ("${env:NO_SUCH_VARIABLE_HERE}", "sasl.password: the secret in \\$NO_SUCH_VARIABLE_HERE is empty or unset"),
    ("${dir:/no/such/dir:pw}", "sasl.password: cannot read /no/such/dir/pw"),
    ("${file:/no/such.properties:pw}", "sasl.password: cannot read /no/such.properties"),
    ("${vault:secret/kafka}", "sasl.password: unknown placeholder"),
])
def test_an_unresolvable_secret_is_one_clear_line(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        consumer_config(KafkaConnection("b:9093", group_id="g", security={"sasl.password": value}))
    assert "\n" not in str(caught.value)


def test_the_readers_consumer_resets_to_the_earliest_offset_whatever_the_start_position() -> None:
    """auto.offset.reset=latest picks where a new group starts (StartPosition); a reader whose position
    fell out of retention must still go to the earliest offset, not skip to the end."""
    conn = KafkaConnection("b:9092", group_id="g", properties={"auto.offset.reset": "latest"})
    assert consumer_config(conn)["auto.offset.reset"] == "earliest"
