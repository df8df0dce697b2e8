"""Helpers shared by the reliability tests: the job as a real subprocess, topics, outputs."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from testbed.kafka.admin import committed_offsets, consume_all, create_topic, end_offsets
from transforms.contract.loader import DEFAULT_CONTRACT

FNAPI = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Topics:
    inp: str
    out: str
    dlq: str


def make_topics(bootstrap: str, prefix: str, partitions: int = 4,
                input_config: dict[str, str] | None = None) -> Topics:
    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"{prefix}-in-{tag}", f"{prefix}-out-{tag}", f"{prefix}-dlq-{tag}")
    create_topic(bootstrap, topics.inp, partitions, config=input_config)
    create_topic(bootstrap, topics.out, 2)
    create_topic(bootstrap, topics.dlq, 1)
    return topics


def job_args(bootstrap: str, topics: Topics, url: str, group: str, *extra: str) -> list[str]:
    return [FNAPI, f"--bootstrap_servers={bootstrap}", f"--input_topic={topics.inp}",
            f"--output_topic={topics.out}", f"--dlq_topic={topics.dlq}", f"--group_id={group}",
            f"--service_url={url}/score", "--progress_interval=0", *extra]


def payments_contract(path: Path, auth: dict | None = None, **sections: dict) -> Path:
    """The default contract (the scoring service's) as a file, with `service.auth` and top-level
    sections' keys replaced."""
    doc = yaml.safe_load(DEFAULT_CONTRACT.read_text())
    if auth is not None:
        doc["service"]["auth"] = auth
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class JobProcess:
    """`python -m pipelines.enrich_payments ARGS` with its output in files (never a full pipe)."""

    def __init__(self, args: Sequence[str], log_dir: Path, name: str = "job",
                 env: dict[str, str] | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
        self.summary_path = log_dir / f"{name}.summary.json"
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.enrich_payments", *args,
                 f"--summary_path={self.summary_path}"],
                stdout=out, stderr=err, cwd=REPO, env=full_env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"job did not finish within {timeout:.0f} s; stderr tail:\n{self.stderr_tail()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no finally blocks, no flush, no commit
            self.proc.wait()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self.stderr().splitlines()[-lines:])

    def summary(self) -> dict:
        return json.loads(self.summary_path.read_text())


def run_job(args: Sequence[str], log_dir: Path, name: str, timeout: float = 300,
            env: dict[str, str] | None = None) -> JobProcess:
    job = JobProcess(args, log_dir, name, env)
    code = job.wait(timeout)
    assert code == 0, f"{name} exited {code}; stderr tail:\n{job.stderr_tail()}"
    return job


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def output_count(bootstrap: str, topic: str) -> int:
    return sum(end_offsets(bootstrap, topic).values())


def txn_ids(bootstrap: str, topic: str, timeout: float = 120) -> Counter[str]:
    """txn_id -> how many records carry it; also checks key == txn_id field."""
    counts: Counter[str] = collections.Counter()
    for record in consume_all(bootstrap, topic, timeout=timeout):
        doc = json.loads(record.value)
        assert record.key is not None and record.key.decode() == doc["txn_id"]
        counts[doc["txn_id"]] += 1
    return counts


def fully_committed(bootstrap: str, group: str, topic: str) -> bool:
    return committed_offsets(bootstrap, group, topic) == end_offsets(bootstrap, topic)
