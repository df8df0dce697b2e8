"""The drain of the pipeline issue on the other runners: Flink (embedded, batch) runs it; Prism is refused."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.enrich_payments import run
from testbed.kafka.admin import committed_offsets, consume_all, end_offsets
from testbed.kafka.produce import produce_events

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(kafka_topic) -> dict[str, str]:
    return {"in": kafka_topic(partitions=2, prefix="rin"), "out": kafka_topic(partitions=2, prefix="rout"),
            "dlq": kafka_topic(partitions=1, prefix="rdlq")}


def job_args(bootstrap: str, topics: dict[str, str], url: str, group: str) -> list[str]:
    return [f"--bootstrap_servers={bootstrap}", f"--input_topic={topics['in']}", f"--output_topic={topics['out']}",
            f"--dlq_topic={topics['dlq']}", f"--group_id={group}", f"--service_url={url}/score", "--batch_size=20",
            "--progress_interval=0"]


def assert_drained(bootstrap: str, topics: dict[str, str], group: str, produced) -> None:
    out = [json.loads(m.value)["txn_id"] for m in consume_all(bootstrap, topics["out"], timeout=60)]
    assert sorted(out) == sorted(produced.txn_ids)
    assert len(consume_all(bootstrap, topics["dlq"], timeout=60)) == produced.malformed
    assert committed_offsets(bootstrap, group, topics["in"]) == end_offsets(bootstrap, topics["in"])


@pytest.mark.flink
def test_drain_on_flink(flink_job_server_jar, bootstrap_servers, topics, scoring_service) -> None:
    produced = produce_events(bootstrap_servers, topics["in"], count=2_000, malformed_fraction=0.01, seed=31)
    run(["--runner=FlinkRunner", f"--flink_job_server_jar={flink_job_server_jar}", "--flink_master=[local]",
         "--flink_version=1.19", "--environment_type=LOOPBACK", "--parallelism=1",
         *job_args(bootstrap_servers, topics, scoring_service.url, "g-flink-drain")])
    assert_drained(bootstrap_servers, topics, "g-flink-drain", produced)


@pytest.mark.parametrize("mode", [[], ["--streaming"]])
def test_prism_is_refused_with_the_reason(prism_binary, mode) -> None:
    """Prism 2.62 drops the state of stateful stages it splits (docs/prism.md: a drain lost
    11 of 1,980 events; the batcher and the committer are both stateful): both modes are
    refused, before anything runs."""
    proc = subprocess.run([sys.executable, "-m", "pipelines.enrich_payments", "--runner=PrismRunner",
                           f"--prism_location={prism_binary}", *mode],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: PrismRunner is refused")
