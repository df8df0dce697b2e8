"""Bad configuration not covered by test_enrich_pipeline.py: one stderr line, exit 2, never a hang."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.integration.reliability_support import FNAPI, make_topics, payments_contract

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
                     f"--service_url={scoring_service.url}/score", *args)
    assert_one_line(proc, message)
    print(f"{args}: {took:.1f} s")


@pytest.mark.parametrize("auth, message", [
    ({"type": "bearer", "file": "{dir}"}, "service.auth: cannot read file {dir}"),   # a directory, even for root
    ({"type": "bearer", "file": "/nonexistent/token"}, "service.auth: cannot read file /nonexistent/token"),
    ({"type": "bearer", "env": "NO_SUCH_TOKEN_VARIABLE"}, "the secret in $NO_SUCH_TOKEN_VARIABLE is empty or unset"),
    ({"type": "basic", "env": "X"}, "auth.type basic needs auth.username"),
    ({"type": "jwt", "env": "X"}, "auth.type must be bearer, basic or header"),
])
def test_a_secret_that_cannot_be_read_fails_with_one_line(auth, message, bootstrap_servers, scoring_service,
                                                          tmp_path) -> None:
    unreadable = tmp_path / "token-dir"
    unreadable.mkdir()
    auth = {k: v.format(dir=unreadable) for k, v in auth.items()}
    contract = payments_contract(tmp_path / "contract.yaml", auth=auth)
    topics = make_topics(bootstrap_servers, "cfg", partitions=1)
    proc, _ = cli(f"--bootstrap_servers={bootstrap_servers}", f"--input_topic={topics.inp}",
                  f"--output_topic={topics.out}", f"--dlq_topic={topics.dlq}", f"--contract={contract}",
                  f"--service_url={scoring_service.url}/score")
    assert_one_line(proc, message.format(dir=unreadable))


@pytest.mark.parametrize("change, message", [
    ({"response": {"fields": {"score": {"type": "decimal"}}}}, "response.fields.score: type must be one of"),
    ({"event": {"id": "nope"}}, "event.id names 'nope', which is not in event.fields"),
    ({"request": {"wrap": 5}}, "request.wrap: must be a dotted path"),
    ({"status": {"reject": [429]}}, "status 429 is in both status.retryable and status.reject"),
    ({"service": {"methd": "POST"}}, "service.methd: unknown key"),
])
def test_a_contract_that_cannot_work_fails_with_one_line(change, message, tmp_path) -> None:
    contract = payments_contract(tmp_path / "contract.yaml", **change)
    proc, _ = cli(f"--contract={contract}")
    assert_one_line(proc, f"contract.yaml: {message}")
