"""Flink failover from checkpoints on a real local session cluster.

A JobManager and two TaskManagers (one slot each), the job at parallelism 2 with its
Python stages in a Beam worker pool (`EXTERNAL`, two SDK worker processes),
checkpoints every 2 s. While input keeps arriving, one part is killed with SIGKILL:
a Python SDK worker process, or a TaskManager (replaced, as Kubernetes would). Flink
restores the job from its last completed checkpoint (asserted from its REST API);
from Kafka alone: nothing lost, at-least-once duplicates within what the batches in
flight and a checkpoint interval carry, exactly-once none, and the committed offsets
reach the end offsets once the input stops.
"""
from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pipelines.enrich_payments import launch
from testbed.flink import cluster
from testbed.flink.worker_pool import WorkerPool
from testbed.kafka import synthetic_events
from testbed.kafka.admin import committed_offsets, consume_all, end_offsets
from testbed.kafka.produce import produce_events
from tests.fixtures.flink import SESSION_TASK_MANAGERS, FlinkSession

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.slow]

CHECKPOINT_MS = 2000
BATCH_SIZE = 10
MAX_IN_FLIGHT = 8
EVENTS, RATE = 3_000, 150           # 20 s of input
def job_args(session: FlinkSession, jar: Path, pool: WorkerPool, bootstrap: str, topics: dict[str, str], url: str,
             group: str, *extra: str) -> list[str]:
    return ["--runner=FlinkRunner", f"--flink_job_server_jar={jar}", f"--flink_master=localhost:{session.rest_port}",
            "--flink_version=1.19", "--streaming", f"--checkpointing_interval={CHECKPOINT_MS}",
            *pool.environment_args(2, task_managers=SESSION_TASK_MANAGERS), f"--bootstrap_servers={bootstrap}",
            f"--input_topic={topics['in']}",
            f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}", f"--group_id={group}",
            f"--service_url={url}/score", f"--batch_size={BATCH_SIZE}", "--max_batch_wait=0.5",
            f"--max_in_flight={MAX_IN_FLIGHT}", "--progress_interval=0", *extra]


def outputs(bootstrap: str, topic: str) -> Counter[str]:
    return Counter(json.loads(m.value)["txn_id"] for m in consume_all(bootstrap, topic, timeout=60))


def produce_plain(bootstrap: str, topic: str) -> set[str]:
    return set(produce_events(bootstrap, topic, count=EVENTS, rate_per_s=RATE, seed=31).txn_ids)


def produce_transactional(bootstrap: str, topic: str) -> set[str]:
    """EVENTS in transactions of 20 at RATE, every fifth aborted; returns the committed ids."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"fo-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    rng, committed, started = random.Random(32), set(), time.monotonic()
    for n in range(EVENTS // 20):
        batch = [synthetic_events.make_event(n * 20 + i, rng, run_id="fotx") for i in range(20)]
        producer.begin_transaction()
        for event in batch:
            producer.produce(topic, synthetic_events.encode(event), key=event["txn_id"].encode())
        producer.flush(30)
        if n % 5 == 4:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            committed.update(e["txn_id"] for e in batch)
        time.sleep(max(0.0, started + (n + 1) * 20 / RATE - time.monotonic()))
    return committed


def run_with_failure(session: FlinkSession, args: list[str], bootstrap: str, topics: dict[str, str], group: str,
                     fail, produce=produce_plain) -> tuple[Counter[str], set[str], dict]:
    """Streams EVENTS at RATE, kills one part once two checkpoints completed and input is still
    arriving, waits for Flink's restore, then until every committed input event is out and the
    offsets are committed to the end."""
    result = launch(args)
    try:
        job = cluster.running_job(session.rest_port)
        produced: list = []
        producer = threading.Thread(target=lambda: produced.append(produce(bootstrap, topics["in"])))
        producer.start()
        deadline = time.monotonic() + 120
        while session.completed_checkpoints(job) < 2:   # something to restore from
            assert time.monotonic() < deadline, "no checkpoint completed"
            time.sleep(0.5)
        fail()
        deadline = time.monotonic() + 120
        while not (flink := cluster.failover_history(session.rest_port, job))["restored"]:
            assert time.monotonic() < deadline, f"Flink did not restore the job from a checkpoint: {flink}"
            time.sleep(1)
        producer.join()
        wanted = produced[0]
        deadline = time.monotonic() + 300
        while not (wanted <= set(out := outputs(bootstrap, topics["out"]))
                   and committed_offsets(bootstrap, group, topics["in"]) == end_offsets(bootstrap, topics["in"])):
            assert time.monotonic() < deadline, \
                f"{len(wanted - set(out))} events missing; committed {committed_offsets(bootstrap, group, topics['in'])}"
            time.sleep(2)
    finally:
        result.cancel()
    return out, wanted, flink


def assert_restored(flink: dict) -> None:
    assert flink["restarts"] >= 1, "Flink did not restart the job"
    assert flink["restored"], "Flink did not restore the job from a checkpoint"


# Written but not committed when a part dies: the batches in flight in each of the two
# workers plus what arrives during a checkpoint interval (x2 for the interval in progress).
AT_LEAST_ONCE_BOUND = 2 * (2 * MAX_IN_FLIGHT * BATCH_SIZE) + 2 * (CHECKPOINT_MS / 1000) * RATE


def failover(session: FlinkSession, jar: Path, bootstrap: str, kafka_topic, url: str, tmp_path: Path, part: str,
             input_topic: str, *extra: str) -> tuple[Counter[str], set[str], dict]:
    """One streaming run on fresh topics that kills `part` (sdk_worker or taskmanager) mid-stream."""
    topics = {"in": kafka_topic(4, "fo-in"), "out": kafka_topic(2, "fo-out"), "dlq": kafka_topic(1, "fo-dlq")}
    group = f"g-failover-{part}-{input_topic}-{len(extra)}"
    produce = produce_plain if input_topic == "plain" else produce_transactional
    with WorkerPool(tmp_path / "pool.log") as pool:
        fail = pool.kill_worker if part == "sdk_worker" else (lambda: cluster.kill_taskmanager(session.run_dir))
        args = job_args(session, jar, pool, bootstrap, topics, url, group, *extra)
        return run_with_failure(session, args, bootstrap, topics, group, fail, produce)


@pytest.mark.parametrize(("part", "input_topic"), [("sdk_worker", "plain"), ("taskmanager", "plain"),
                                                   ("sdk_worker", "transactional")])
def test_failover_at_least_once_loses_nothing(part: str, input_topic: str, flink_session: FlinkSession, flink_job_server_jar,
                                              bootstrap_servers, kafka_topic, scoring_service,
                                              tmp_path: Path) -> None:
    out, wanted, flink = failover(flink_session, flink_job_server_jar, bootstrap_servers, kafka_topic, scoring_service.url,
                                  tmp_path, part, input_topic)
    duplicates = sum(out.values()) - len(out)
    print(f"\nfailover ({part}, {input_topic} input): {len(wanted)} events, {duplicates} duplicates "
          f"(bound {AT_LEAST_ONCE_BOUND:.0f}), restored from checkpoints {flink['restored']}")
    assert set(out) == wanted                                   # nothing lost, nothing invented (aborted input)
    assert duplicates <= AT_LEAST_ONCE_BOUND
    assert_restored(flink)


@pytest.mark.parametrize("input_topic", ["plain", "transactional"])
def test_failover_exactly_once_duplicates_nothing(input_topic: str, flink_session: FlinkSession, flink_job_server_jar,
                                                  bootstrap_servers, kafka_topic, scoring_service,
                                                  tmp_path: Path) -> None:
    out, wanted, flink = failover(flink_session, flink_job_server_jar, bootstrap_servers, kafka_topic, scoring_service.url,
                                  tmp_path, "sdk_worker", input_topic,
                                  "--delivery=exactly_once", "--kafka_property=isolation.level=read_committed")
    print(f"\nfailover (exactly-once, {input_topic} input): {len(wanted)} events, "
          f"{sum(out.values()) - len(out)} duplicates")
    assert set(out) == wanted                                   # aborted input never comes out
    assert max(out.values()) == 1, [k for k, n in out.items() if n > 1][:5]
    assert_restored(flink)
