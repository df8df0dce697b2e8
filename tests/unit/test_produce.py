"""Producer CLI parsing and malformed-record selection (no broker needed)."""
from __future__ import annotations

import argparse

import pytest

from testbed.kafka import produce


@pytest.mark.parametrize(("text", "per_s"), [
    ("100000/min", 100_000 / 60), ("1667/s", 1667.0), ("1667", 1667.0), ("3600/h", 1.0), ("10 / sec", 10.0),
])
def test_parse_rate(text: str, per_s: float) -> None:
    assert produce.parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["fast", "5/fortnight", "0/s", "-3/s", ""])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        produce.parse_rate(text)


@pytest.mark.parametrize(("text", "seconds"), [("120s", 120.0), ("2m", 120.0), ("500ms", 0.5), ("1h", 3600.0), ("90", 90.0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert produce.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.07, 0.29, 1 / 3, 1.0])
def test_malformed_selection_is_exact_and_spread(fraction: float) -> None:
    pick = produce._malformed_every(fraction)
    chosen = [seq for seq in range(10_000) if pick(seq)]
    assert len(chosen) == int(10_000 * fraction + 1e-9)
    if fraction == 0.01:
        assert chosen[:3] == [99, 199, 299]


@pytest.mark.parametrize("argv", [
    ["--rate", "fast"],
    ["--count", "5", "--backlog", "5"],
    ["--backlog", "5", "--rate", "5/s"],
    ["--malformed_fraction", "1.5", "--count", "1"],
    ["--count", "0"],
    ["--no-such-flag"],
])
def test_bad_flags_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        produce.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err
