"""Checks that fail fast, with one line, before a job is submitted.

An unreachable broker, a missing topic, a contract that cannot work or a
service that refuses the job would otherwise surface minutes later as a worker
stack trace, a hang, or a topic full of dead letters.
"""
from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, Producer

from pipelines.options import ConfigError
from transforms.contract.loader import Contract, ContractError, load_contract
from transforms.contract.probe import ProbeFailed, probe
from transforms.kafka.connection import KafkaConnection, consumer_config, producer_config
from transforms.quota.redis_coordinator import CoordinatorUnavailable, QuotaCoordinatorConfig, RedisCoordinator
from transforms.quota.runtime import FleetQuota

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
                          f"(create them, e.g. `python -m testbed.kafka.produce --create_topic ...`)")


def check_coordinator(quota: FleetQuota | None) -> None:
    """A fleet quota's coordinator answers a renewal now: a wrong address is a misconfiguration
    (every worker would take the whole quota for itself); losing it later only decays the leases."""
    if quota is None:
        return
    coordinator = RedisCoordinator(QuotaCoordinatorConfig(quota.coordinator.url, quota.coordinator.name,
                                                          timeout_s=TIMEOUT_S), worker_id="preflight")
    try:
        coordinator.renew(0.0, quota.lease.quota_rps, 1.0)
    except CoordinatorUnavailable as e:
        raise ConfigError(f"{e} (--quota_coordinator)") from None
    finally:
        coordinator.leave()


def load_job_contract(path: str, service_url: str | None) -> Contract:
    """The contract the job runs with (`--service_url` overriding its URL), its secrets readable."""
    try:
        contract = load_contract(path)
        if service_url:
            contract = contract.with_url(service_url)
    except ContractError as e:
        raise ConfigError(str(e)) from None
    auth = contract.endpoint.auth
    if auth is not None:
        try:   # workers read it again themselves; this only fails early
            auth.secret.read()
        except OSError as e:
            raise ConfigError(f"{contract.source}: service.auth: cannot read {auth.secret.describe()}: "
                              f"{e.strerror or e}") from None
        except ValueError as e:
            raise ConfigError(f"{contract.source}: service.auth: {e}") from None
    return contract


def check_service(contract: Contract, probe_timeout_s: float) -> None:
    """One real request through the job's own caller (`transforms/contract/probe.py`); 0 skips it."""
    if probe_timeout_s <= 0:
        return
    try:
        probe(contract, probe_timeout_s)
    except ProbeFailed as e:
        raise ConfigError(str(e)) from None
