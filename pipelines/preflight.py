"""Checks that fail fast, with one line, before a job is submitted.

An unreachable broker, a missing topic or a dead scoring URL would otherwise
surface minutes later as a worker stack trace (or a hang).
"""
from __future__ import annotations

import socket
from collections.abc import Iterable
from urllib.parse import urlparse

from confluent_kafka import Consumer, KafkaException, Producer

from pipelines.options import ConfigError
from transforms.kafka.connection import KafkaConnection, consumer_config, producer_config
from transforms.scoring.client import read_token

TIMEOUT_S = 10.0


def check_kafka(conn: KafkaConnection, topics: Iterable[str], timeout_s: float = TIMEOUT_S) -> None:
    """Reaches Kafka with the job's own consumer configuration - every --kafka_property, not
    just the security ones: a setting the job needs to connect (say
    enable.ssl.certificate.verification) must count here too, and one that breaks it must
    fail here."""
    # log_level 0: librdkafka would otherwise print a line per failed connect.
    quiet = {"log_level": 0}
    try:  # librdkafka refuses unknown properties and bad values when a client is created
        Producer({**producer_config(conn), **quiet}).flush(0)
        consumer = Consumer({**consumer_config(conn), **quiet})
    except KafkaException as e:
        raise ConfigError(f"invalid Kafka client setting: {e.args[0].str() if e.args else e}") from None
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
    except KafkaException as e:
        raise ConfigError(f"Kafka at {conn.bootstrap_servers} is not reachable within {timeout_s:.0f} s "
                          f"({e.args[0].str() if e.args else e})") from None
    finally:
        consumer.close()
    missing = [t for t in topics if t not in metadata.topics]
    if missing:
        raise ConfigError(f"topic(s) missing on {conn.bootstrap_servers}: {', '.join(missing)} "
                          f"(create them, e.g. `python -m testbed.produce --create_topic ...`)")


def check_scoring_url(url: str, timeout_s: float = 5.0) -> None:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            pass
    except OSError as e:
        raise ConfigError(f"scoring service at {url} is not reachable ({e.strerror or e})") from None


def check_token_source(env_var: str | None, path: str | None) -> None:
    """Fails early if the token file is unreadable (workers read it again themselves)."""
    try:
        read_token(env_var, path)
    except OSError as e:
        raise ConfigError(f"cannot read --scoring_token_file {path}: {e.strerror}") from None
