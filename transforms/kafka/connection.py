"""confluent-kafka client configurations for the pure-Python Kafka transforms.

One `KafkaConnection` describes how to reach the cluster (servers, group,
security, extra properties); `consumer_config` / `producer_config` turn it
into librdkafka dictionaries with the memory caps this pipeline relies on:
the backlog must stay in Kafka, not in librdkafka's pre-fetch queue
(default 64 MiB per partition) or in an unbounded producer queue.
`with_retries` wraps the few blocking group/metadata calls, which a fresh
broker answers with NOT_COORDINATOR while `__consumer_offsets` loads.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

from transforms.contract.secrets import SecretSource

T = TypeVar("T")

#: Security settings passed through unchanged (librdkafka names).
SECURITY_KEYS = frozenset({
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
})

_SECRET_KEY = re.compile(r"password|secret|jaas|token|credential|\.pem$",
                         re.IGNORECASE)
_REDACTED = "***"
# A value read when a client is made, not carried in the pipeline: `${env:NAME}`, `${dir:DIR:FILE}`,
# `${file:PATH:KEY}` (the syntax of Kafka's EnvVar-, Directory- and FileConfigProvider).
_PLACEHOLDER = re.compile(r"^\$\{(\w+):(.+)\}$")
_PROPERTY_LINE = re.compile(r"([^=:\s]+)\s*[=:]\s*(.*)")

# Errors of a broker whose coordinator or partition leadership is still settling
# (__consumer_offsets being created or loaded; a topic just created, whose
# leader the broker's own metadata does not know yet); librdkafka reports them
# to the caller without marking them retriable.
_TRANSIENT_CODES = frozenset({
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._WAIT_COORD,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
})


@dataclass(frozen=True, repr=False)
class KafkaConnection:
    """Where and how to connect; picklable so it can travel inside DoFns.

    `properties` are arbitrary librdkafka `key=value` settings applied last,
    so they can override every default below (e.g. `fetch.max.bytes`). A value
    may be a placeholder (`resolved`): secrets are then read by whoever makes a
    client (the worker), so they never travel inside the pipeline.
    """
    bootstrap_servers: str
    group_id: str | None = None
    security: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    # Consumer pre-fetch caps (per consumer; a reader keeps up to ReadSettings.max_open_consumers).
    queued_max_messages_kbytes: int = 2048
    queued_min_messages: int = 1000
    fetch_max_bytes: int = 2 * 1024 * 1024
    max_partition_fetch_bytes: int = 1024 * 1024
    # How long a consumer whose pre-fetch queue filled up waits before it
    # fetches again. librdkafka's default (1,000 ms) stalls a pooled consumer
    # for a second each time it is re-assigned to another partition.
    fetch_queue_backoff_ms: int = 10
    # How long the broker holds a fetch for a partition with nothing new. A
    # consumer re-assigned from a caught-up partition waits for that fetch to
    # return first: at the default 500 ms, 128 partitions on 8 consumers drained
    # at 0.40 of the 8-partition rate, at 100 ms 0.77, at 50 ms 0.85-0.91. The price: an
    # idle consumer sends 20 empty fetches a second (raise it with --kafka_property
    # fetch.wait.max.ms=500 when partitions <= --max_open_consumers).
    fetch_wait_max_ms: int = 50
    # Producer queue caps: a full queue raises BufferError = backpressure.
    linger_ms: int = 5
    queue_buffering_max_kbytes: int = 16 * 1024
    queue_buffering_max_messages: int = 20_000

    def __post_init__(self) -> None:
        unknown = sorted(set(self.security) - SECURITY_KEYS)
        if unknown:
            raise ValueError(
                f"unsupported security setting(s) {unknown}; "
                f"allowed: {sorted(SECURITY_KEYS)} (use `properties` for others)")

    def __repr__(self) -> str:
        return (f"KafkaConnection(bootstrap_servers={self.bootstrap_servers!r}, "
                f"group_id={self.group_id!r}, "
                f"security={redacted(self.security)!r}, "
                f"properties={redacted(self.properties)!r})")

    def require_group(self) -> str:
        if not self.group_id:
            raise ValueError("a consumer group id is required (KafkaConnection.group_id)")
        return self.group_id


def parse_properties(items: Iterable[str]) -> dict[str, str]:
    """Parse `key=value` strings (e.g. repeated CLI flags) into a dict."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def is_placeholder(value: str) -> bool:
    return _PLACEHOLDER.match(value) is not None


def resolved(key: str, value: str) -> str:
    """`value`, or what its placeholder names (Kafka's config-provider syntax), read now:
    `${env:NAME}`, `${dir:DIR:FILE}` (a file's content: a mounted Kubernetes Secret) or
    `${file:PATH:KEY}` (a key of a properties file). ValueError: one line naming `key`."""
    match = _PLACEHOLDER.match(value)
    if match is None:
        return value
    provider, rest = match.groups()
    try:
        if provider == "env":
            secret = SecretSource(env=rest).read()
        elif provider == "dir":
            directory, _, name = rest.rpartition(":")
            secret = SecretSource(file=os.path.join(directory, name)).read()
        elif provider == "file":
            path, _, name = rest.rpartition(":")
            secret = _properties_file(path).get(name)
            if secret is None:
                raise ValueError(f"{path} has no key {name!r}")
        else:
            raise ValueError(f"unknown placeholder ${{{provider}:...}} (env, dir or file)")
    except OSError as err:
        raise ValueError(f"{key}: cannot read {err.filename}: {err.strerror}") from None
    except ValueError as err:
        raise ValueError(f"{key}: {err}") from None
    assert secret is not None
    return secret


def _properties_file(path: str) -> dict[str, str]:
    """`key=value` (or `key: value`) lines of a Java properties file, `#`/`!` comments skipped."""
    with open(path, encoding="utf-8") as f:
        pairs = (_PROPERTY_LINE.match(line.strip()) for line in f if line.strip()[:1] not in ("", "#", "!"))
        return {m[1]: m[2].strip() for m in pairs if m}


def _resolved_all(settings: Mapping[str, str]) -> dict[str, str]:
    return {key: resolved(key, value) for key, value in settings.items()}


def _common(conn: KafkaConnection) -> dict[str, object]:
    config: dict[str, object] = {"bootstrap.servers": conn.bootstrap_servers}
    config.update(_resolved_all(conn.security))
    return config


def consumer_config(conn: KafkaConnection) -> dict[str, object]:
    """Consumer for assign()-based reads and offset commits (never subscribes).

    Offsets are committed explicitly by `CommitOffsets` after the outputs are
    acknowledged, so auto commit and auto offset store are off. A position
    that fell out of retention resets to the earliest offset (the committed
    range then covers the deleted offsets instead of skipping live data).
    """
    config = _common(conn)
    config.update({
        "group.id": conn.require_group(),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "queued.max.messages.kbytes": conn.queued_max_messages_kbytes,
        "queued.min.messages": conn.queued_min_messages,
        "fetch.max.bytes": conn.fetch_max_bytes,
        "max.partition.fetch.bytes": conn.max_partition_fetch_bytes,
        "fetch.queue.backoff.ms": conn.fetch_queue_backoff_ms,
        "fetch.wait.max.ms": conn.fetch_wait_max_ms,
    })
    config.update(_resolved_all(conn.properties))
    # The user's auto.offset.reset chooses where a new group starts (`start.StartPosition`); a
    # position that fell out of retention must still move to the earliest offset, never skip to the end.
    config["auto.offset.reset"] = "earliest"
    return config


def producer_config(conn: KafkaConnection) -> dict[str, object]:
    """Idempotent producer with a bounded local queue."""
    config = _common(conn)
    config.update({
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": conn.linger_ms,
        "queue.buffering.max.kbytes": conn.queue_buffering_max_kbytes,
        "queue.buffering.max.messages": conn.queue_buffering_max_messages,
    })
    config.update(_resolved_all(conn.properties))
    return config


def is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redacted(config: Mapping[str, object]) -> dict[str, object]:
    """A copy that is safe to log: secret-looking values are masked."""
    return {k: (_REDACTED if _SECRET_KEY.search(k) else v) for k, v in config.items()}


def with_retries(call: Callable[[], T], timeout_s: float = 60.0) -> T:
    """Run a blocking client call, retrying retriable and settling-broker errors until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            transient = err is not None and (err.retriable() or err.code() in _TRANSIENT_CODES)
            if not transient or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
