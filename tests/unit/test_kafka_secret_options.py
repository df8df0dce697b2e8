"""Kafka secrets on the job's command line: refused, never echoed, read from env or files."""
from __future__ import annotations

import pytest

from pipelines.options import ConfigError, EnrichPaymentsOptions, parse_options, validate


def check(*argv: str) -> None:
    validate(parse_options(list(argv)).view_as(EnrichPaymentsOptions))


def test_a_mistyped_flag_does_not_echo_its_value() -> None:
    """Before: `unknown option(s): --kafka_propertie=ssl.key.password=hunter2`."""
    with pytest.raises(ConfigError, match="unknown option") as caught:
        parse_options(["--kafka_propertie=ssl.key.password=hunter2"])
    assert "hunter2" not in str(caught.value) and "--kafka_propertie" in str(caught.value)


@pytest.mark.parametrize("key", ["sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret"])
def test_a_literal_secret_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=f"--kafka_property {key}: .*\\$\\{{env:NAME\\}}") as caught:
        check(f"--kafka_property={key}=hunter2")
    assert "hunter2" not in str(caught.value)


def test_a_secret_from_the_environment_is_accepted_and_checked_at_start(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_PASSWORD", "hunter2")
    check("--kafka_property=sasl.password=${env:KAFKA_PASSWORD}")
    monkeypatch.delenv("KAFKA_PASSWORD")
    with pytest.raises(ConfigError, match="--kafka_property sasl.password: the secret in \\$KAFKA_PASSWORD is empty or unset"):
        check("--kafka_property=sasl.password=${env:KAFKA_PASSWORD}")


def test_placeholders_need_the_python_kafka_client(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_PASSWORD", "hunter2")
    with pytest.raises(ConfigError, match="--kafka_io=java"):
        check("--kafka_io=java", "--runner=FlinkRunner", "--kafka_property=sasl.password=${env:KAFKA_PASSWORD}")
