"""Flag parsing and live-setting validation share one rule table."""
import json
from pathlib import Path

import pytest

from testbed.scoring.config import ConfigError, Settings, parse_settings
from testbed.scoring.faults import Fault


def test_defaults_follow_the_brief(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCORING_TOKEN", raising=False)
    s = parse_settings([])
    assert (s.host, s.port, s.rate, s.burst) == ("127.0.0.1", 8080, 333.0, 33.3)
    assert (s.max_batch, s.max_body_bytes, s.max_concurrency, s.queue_size) == (100, 1 << 20, 64, 16)
    assert (s.queue_timeout_ms, s.latency_ms, s.per_item_ms, s.jitter) == (200.0, 20.0, 0.2, 0.2)
    assert (s.overload_mode, s.reject_cost, s.ratelimit_headers, s.token, s.faults) == (False, 0.5, True, None, [])


def test_burst_is_at_least_one_and_follows_the_rate_unless_explicit() -> None:
    assert parse_settings(["--rate", "2"]).burst == 1.0
    s = parse_settings(["--rate", "1000"])
    assert s.burst == 100.0
    s.apply(s.validated_update({"rate": 50}))
    assert s.burst == 5.0
    assert parse_settings(["--rate", "1000", "--burst", "7"]).burst == 7.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "-1"], "rate must be > 0"),
        (["--rate", "0"], "rate must be > 0"),
        (["--rate", "nan"], "rate must be a finite number"),
        (["--rate", "fast"], "invalid float value"),
        (["--max-concurrency", "0"], "max_concurrency must be >= 1"),
        (["--max-batch", "0"], "max_batch must be >= 1"),
        (["--burst", "0.5"], "burst must be >= 1"),
        (["--jitter", "1.5"], "jitter must be >= 0 and <= 1"),
        (["--queue-size", "-1"], "queue_size must be >= 0"),
        (["--port", "70000"], "port must be >= 0 and <= 65535"),
        (["--faults", "not json"], "--faults:"),
        (["--faults", '{"kind": "outage"}'], "must be a JSON list"),
        (["--faults", '[{"kind": "meteor", "duration_s": 1}]'], "'kind' must be one of"),
        (["--faults", "@/nonexistent/faults.json"], "cannot read"),
        (["--token-file", "/nonexistent/token"], "cannot read"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--rat", "5"], "unrecognized arguments"),
    ],
)
def test_impossible_flags_raise_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(argv)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_faults_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps([{"kind": "capacity", "start_s": 5, "duration_s": 10, "factor": 0.5}]))
    assert parse_settings(["--faults", f"@{path}"]).faults == [Fault("capacity", 5.0, 10.0, 0.5)]


def test_token_from_file_wins_over_env_and_is_not_in_public_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCORING_TOKEN", "from-env")
    assert parse_settings([]).token == "from-env"
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    s = parse_settings(["--token-file", str(path)])
    assert s.token == "s3cret"
    assert "s3cret" not in json.dumps(s.public()) + repr(s)
    path.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        parse_settings(["--token-file", str(path)])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "non-empty JSON object"),
        ([1], "non-empty JSON object"),
        ({"max_batch": 5}, "not a live setting: max_batch"),
        ({"rate": 0}, "rate must be > 0"),
        ({"max_concurrency": 2.5}, "max_concurrency must be an integer"),
        ({"max_concurrency": True}, "must be a finite number"),
        ({"latency_ms": "20"}, "must be a finite number"),
    ],
)
def test_live_updates_are_checked_before_anything_changes(changes: object, message: str) -> None:
    s = Settings()
    with pytest.raises(ConfigError, match=message):
        s.validated_update(changes)
    assert s == Settings()


def test_live_update_applies_typed_values() -> None:
    s = Settings()
    s.apply(s.validated_update({"rate": 10, "max_concurrency": 8.0, "latency_ms": 5}))
    assert (s.rate, s.max_concurrency, s.latency_ms) == (10.0, 8, 5.0)
    assert isinstance(s.max_concurrency, int) and isinstance(s.rate, float)
