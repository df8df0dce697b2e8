"""Start positions of a new consumer group: parsing and the job's option."""
from __future__ import annotations

import pytest

from pipelines.options import ConfigError, EnrichPaymentsOptions, parse_options, start_position, validate
from transforms.kafka.start import StartPosition


@pytest.mark.parametrize(("text", "expected"), [
    ("earliest", StartPosition("earliest")),
    ("latest", StartPosition("latest")),
    ("1796601600000", StartPosition("timestamp", 1_796_601_600_000)),
    ("2026-12-07T00:00:00Z", StartPosition("timestamp", 1_796_601_600_000)),
    ("2026-12-07T01:00:00+01:00", StartPosition("timestamp", 1_796_601_600_000)),
])
def test_parse(text: str, expected: StartPosition) -> None:
    assert StartPosition.parse(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-12-07T00:00:00", "-5", ""])
def test_parse_refuses_what_it_cannot_place(text: str) -> None:
    with pytest.raises(ValueError, match="start position"):
        StartPosition.parse(text)


@pytest.mark.parametrize(("reset", "kind"), [(None, "earliest"), ("smallest", "earliest"), ("latest", "latest"),
                                             ("end", "latest"), ("error", "error")])
def test_auto_offset_reset_is_honoured(reset: str | None, kind: str) -> None:
    properties = {} if reset is None else {"auto.offset.reset": reset}
    assert StartPosition.from_reset(properties).kind == kind


def options(*argv: str) -> EnrichPaymentsOptions:
    return parse_options(list(argv)).view_as(EnrichPaymentsOptions)


def test_the_option_wins_over_the_property() -> None:
    opts = options("--start_position=latest", "--kafka_property=auto.offset.reset=earliest")
    assert start_position(opts) == StartPosition("latest")
    assert start_position(options("--kafka_property=auto.offset.reset=largest")) == StartPosition("latest")


@pytest.mark.parametrize(("argv", "message"), [
    (["--start_position=soon"], "--start_position: start position 'soon'"),
    (["--kafka_property=auto.offset.reset=newest"], "--kafka_property: auto.offset.reset='newest'"),
])
def test_a_bad_start_is_a_one_line_config_error(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        validate(options(*argv))
    assert "\n" not in str(caught.value)
