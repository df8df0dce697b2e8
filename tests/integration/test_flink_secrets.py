"""A Kafka secret given as a placeholder never leaves the processes that use it (issue 26, item 7).

A streaming job on a real local session cluster, submitted through the Beam job server
and as an uber jar (what `deploy/` does), with `sasl.password=${env:NAME}`: the job runs
(the SDK workers resolve the placeholder from their own environment), and the secret's
value is nowhere Flink keeps or shows the job — its REST job config and plan, the uber
jar uploaded to the JobManager — nor in any process's command line. The placeholder is
there (the options do travel), so the check looks where a literal would have leaked.
"""
from __future__ import annotations

import json
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from pipelines.enrich_payments import launch
from testbed.flink import cluster as flink_cluster
from testbed.flink.worker_pool import WorkerPool
from testbed.kafka.admin import consume_all
from testbed.kafka.produce import produce_events
from tests.fixtures.flink import FlinkSession
from tests.integration.test_flink_failover import job_args

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.slow]

SECRET_ENV = "FLINK_SECRETS_TEST_KAFKA_PASSWORD"
PLACEHOLDER = "${env:" + SECRET_ENV + "}"
EVENTS = 200


def uploaded_jar_entries(upload_dir: Path) -> list[bytes]:
    """Every entry of every jar the JobManager received."""
    jars = list(upload_dir.rglob("*.jar"))
    assert jars, f"no jar uploaded under {upload_dir}"
    contents = []
    for jar in jars:
        with zipfile.ZipFile(jar) as z:
            contents += [z.read(name) for name in z.namelist() if not name.endswith(".class")]
    return contents


def command_lines() -> list[str]:
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(path.read_bytes().decode(errors="replace"))
        except OSError:
            continue
    return lines


@pytest.mark.parametrize("submit", ["job_server", "uber_jar"])
def test_kafka_secret_placeholder_never_reaches_flink(submit: str, flink_session: FlinkSession,
                                                      flink_job_server_jar, bootstrap_servers, kafka_topic,
                                                      scoring_service, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv(SECRET_ENV, secret)                 # the launcher and the worker pool inherit it
    topics = {"in": kafka_topic(2, "sec-in"), "out": kafka_topic(1, "sec-out"), "dlq": kafka_topic(1, "sec-dlq")}
    extra = ["--kafka_property=sasl.username=svc", f"--kafka_property=sasl.password={PLACEHOLDER}"]
    if submit == "uber_jar":
        extra.append("--flink_submit_uber_jar")
    with WorkerPool(tmp_path / "pool.log") as pool:
        args = job_args(flink_session, flink_job_server_jar, pool, bootstrap_servers, topics, scoring_service.url,
                        f"g-secrets-{submit}", *extra)
        launch(args)
        job = flink_cluster.running_job(flink_session.rest_port)
        try:
            wanted = set(produce_events(bootstrap_servers, topics["in"], count=EVENTS, seed=26).txn_ids)
            deadline = time.monotonic() + 180
            while not wanted <= {json.loads(m.value)["txn_id"] for m in consume_all(bootstrap_servers, topics["out"],
                                                                                     timeout=10)}:
                assert time.monotonic() < deadline, "the job with a placeholder secret did not score its input"
                time.sleep(2)
            shown = [flink_cluster.rest_text(flink_session.rest_port, path)
                     for path in (f"/jobs/{job}/config", f"/jobs/{job}", f"/jobs/{job}/plan")]
            processes = command_lines()
            jar = uploaded_jar_entries(flink_session.run_dir / "uploads") if submit == "uber_jar" else []
        finally:
            flink_cluster.cancel_job(flink_session.rest_port, job)
    assert not [text for text in shown if secret in text], "the secret is in Flink's REST view of the job"
    assert not [line for line in processes if secret in line], "the secret is in a process's command line"
    assert not [entry for entry in jar if secret.encode() in entry], "the secret is in the uploaded uber jar"
    if submit == "uber_jar":
        assert [entry for entry in jar if PLACEHOLDER.encode() in entry], "the options are not in the jar"
