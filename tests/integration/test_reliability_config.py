"""Bad configuration not covered by test_enrich_pipeline.py: one stderr line, exit 2, never a hang."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.integration.reliability_support import FNAPI, make_topics

pytestmark = pytest.mark.integration

# Refused by option validation (no broker or service needed).
OFFLINE = [
    (["--min_rate=-1"], "--min_rate must be > 0"),
    (["--initial_rate=-5"], "--initial_rate must be > 0"),
    (["--min_rate=10", "--max_rate=5"], "--min_rate <= --initial_rate <= --max_rate"),
    (["--retry_budget_ratio=2"], "--retry_budget_ratio must be in [0, 1]"),
    (["--max_in_flight=0"], "--max_in_flight must be > 0"),
    (["--kafka_property=security.protocol"], "--kafka_property must be KEY=VALUE"),
    (["--kafka_property==SSL"], "--kafka_property must be KEY=VALUE"),
    (["--drain_chunk=-1"], "--drain_chunk must be >= 0"),
    (["--max_records=-5"], "--max_records must be >= 0"),
    (["--batch_size=abc"], "invalid int value: 'abc'"),
    (["--input_topic="], "--input_topic must not be empty"),
]


def cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipelines.enrich_payments", FNAPI, "--progress_interval=0", *args],
                          capture_output=True, text=True, timeout=90)  # a hang fails here
    return proc, time.monotonic() - started


def assert_one_line(proc: subprocess.CompletedProcess, message: str) -> None:
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and "Warning" not in line and "warnings.warn" not in line]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.parametrize("args, message", OFFLINE)
def test_invalid_option_values_fail_with_one_line(args, message) -> None:
    proc, took = cli(*args)
    assert_one_line(proc, message)
    print(f"{args}: {took:.1f} s")


@pytest.mark.parametrize("args, message", [
    (["--scoring_token_file=/nonexistent/token"], "cannot read --scoring_token_file /nonexistent/token"),
    (["--kafka_property=security.protocol=BOGUS"], "invalid Kafka client setting"),
    (["--kafka_property=no.such.property=1"], "invalid Kafka client setting"),
    # Not a security key, yet the job's clients cannot connect with it (no IPv6 route to
    # 127.0.0.1): preflight must use it too, not pass and leave the job to fail later.
    (["--kafka_property=broker.address.family=v6"], "is not reachable"),
])
def test_environment_dependent_misconfiguration_fails_with_one_line(
        args, message, bootstrap_servers, scoring_service, tmp_path) -> None:
    topics = make_topics(bootstrap_servers, "cfg", partitions=1)
    proc, took = cli(f"--bootstrap_servers={bootstrap_servers}", f"--input_topic={topics.inp}",
                     f"--output_topic={topics.out}", f"--dlq_topic={topics.dlq}",
                     f"--scoring_url={scoring_service.url}", *args)
    assert_one_line(proc, message)
    print(f"{args}: {took:.1f} s")


def test_unreadable_token_file_fails_with_one_line(bootstrap_servers, scoring_service, tmp_path) -> None:
    unreadable = tmp_path / "token-dir"   # a directory: unreadable as a file even for root
    unreadable.mkdir()
    topics = make_topics(bootstrap_servers, "cfg", partitions=1)
    proc, _ = cli(f"--bootstrap_servers={bootstrap_servers}", f"--input_topic={topics.inp}",
                  f"--output_topic={topics.out}", f"--dlq_topic={topics.dlq}",
                  f"--scoring_url={scoring_service.url}", f"--scoring_token_file={unreadable}")
    assert_one_line(proc, f"cannot read --scoring_token_file {unreadable}")
