"""--max_in_flight holds for the whole job when its scoring step runs in several worker processes.

Flink embedded, with the job's Python stages in a worker pool of two
processes (`testbed/flink/worker_pool.py`), drains through a slow service: the
service's own peak-concurrency counter must stay at or below the job's cap
although each process runs its own controller, both processes must have
scored, and every event must come out once with the offsets committed to the
end.
"""
from __future__ import annotations

import json
import os

import pytest

from pipelines.enrich_payments import run
from testbed.flink.worker_pool import WorkerPool
from testbed.kafka.admin import committed_offsets, consume_all, end_offsets
from testbed.kafka.produce import produce_events

pytestmark = [pytest.mark.integration, pytest.mark.flink]

JOB_CAP = 4
SHARDS = 4


@pytest.fixture
def topics(kafka_topic) -> dict[str, str]:
    return {"in": kafka_topic(partitions=4, prefix="cin"), "out": kafka_topic(partitions=2, prefix="cout"),
            "dlq": kafka_topic(partitions=1, prefix="cdlq")}


def test_two_worker_processes_share_the_jobs_in_flight_cap(flink_job_server_jar, bootstrap_servers, topics,
                                                           scoring_service_factory) -> None:
    # 200 ms per request and no rate limit: only the in-flight cap bounds the concurrency.
    service = scoring_service_factory(rate=100_000, latency_ms=200, per_item_ms=0)
    produced = produce_events(bootstrap_servers, topics["in"], count=1_000, seed=21)
    with WorkerPool() as pool:
        summary = run(["--runner=FlinkRunner", f"--flink_job_server_jar={flink_job_server_jar}",
                       "--flink_master=[local]", "--flink_version=1.19", *pool.environment_args(2),
                       f"--bootstrap_servers={bootstrap_servers}", f"--input_topic={topics['in']}",
                       f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}", "--group_id=g-cap",
                       f"--service_url={service.url}/score", "--batch_size=5", f"--num_shards={SHARDS}",
                       f"--max_in_flight={JOB_CAP}", "--initial_rate=1000", "--progress_interval=0"])
    stats = service.stats()
    launcher = f"throttled-enrichment pid/{os.getpid()}"                 # the start-up probe: one event
    assert stats["unique_by_client"].get(launcher) == 1
    workers = {client: n for client, n in stats["unique_by_client"].items() if n and client != launcher}
    print(f"\npeak concurrency {stats['peak_concurrency']} (cap {JOB_CAP}); events per worker {workers}")
    assert stats["peak_concurrency"] <= JOB_CAP
    assert len(workers) == 2, workers                       # really two processes, each with its controller
    out = [json.loads(m.value)["txn_id"] for m in consume_all(bootstrap_servers, topics["out"], timeout=60)]
    assert sorted(out) == sorted(produced.txn_ids)
    assert summary.counter("events_scored") == len(produced.txn_ids)
    assert committed_offsets(bootstrap_servers, "g-cap", topics["in"]) == end_offsets(bootstrap_servers, topics["in"])
