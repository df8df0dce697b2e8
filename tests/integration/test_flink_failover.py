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
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.enrich_payments import launch
from testbed import flink_cluster
from testbed.kafka_admin import committed_offsets, consume_all, end_offsets
from testbed.local_ports import free_ports
from testbed.produce import produce_events
from testbed.worker_pool import WorkerPool

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.slow]

CHECKPOINT_MS = 2000
BATCH_SIZE = 10
MAX_IN_FLIGHT = 8
EVENTS, RATE = 3_000, 150           # 20 s of input
# Fast detection of a dead TaskManager, and room to restart while a replacement registers.
FAILOVER_CONFIG: dict[str, str | int] = {
    "taskmanager.numberOfTaskSlots": 1,
    "heartbeat.interval": 1000,
    "heartbeat.timeout": 6000,
    "restart-strategy.type": "fixed-delay",
    "restart-strategy.fixed-delay.attempts": 20,
    "restart-strategy.fixed-delay.delay": "2 s",
}


class Session:
    def __init__(self, rest_port: int, run_dir: Path) -> None:
        self.rest_port, self.run_dir = rest_port, run_dir

    def rest(self, path: str) -> dict:
        return flink_cluster.rest(self.rest_port, path)

    def completed_checkpoints(self, job: str) -> int:
        return int(self.rest(f"/jobs/{job}/checkpoints")["counts"]["completed"])


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    port, run_dir = free_ports(1)[0], tmp_path / "flink"
    try:
        flink_cluster.up(port, run_dir, taskmanagers=2, overrides=FAILOVER_CONFIG)
    except flink_cluster.ClusterError as err:
        pytest.fail(f"cannot start the Flink session cluster: {err}")
    try:
        yield Session(port, run_dir)
    finally:
        flink_cluster.down(port, run_dir)
        for pid in flink_cluster.taskmanager_pids(run_dir):   # replacements the scripts also track
            os.kill(pid, signal.SIGKILL)


def job_args(session: Session, jar: Path, pool: WorkerPool, bootstrap: str, topics: dict[str, str], url: str,
             group: str, *extra: str) -> list[str]:
    return ["--runner=FlinkRunner", f"--flink_job_server_jar={jar}", f"--flink_master=localhost:{session.rest_port}",
            "--flink_version=1.19", "--streaming", f"--checkpointing_interval={CHECKPOINT_MS}",
            *pool.environment_args(2), f"--bootstrap_servers={bootstrap}", f"--input_topic={topics['in']}",
            f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}", f"--group_id={group}",
            f"--service_url={url}/score", f"--batch_size={BATCH_SIZE}", "--max_batch_wait=0.5",
            f"--max_in_flight={MAX_IN_FLIGHT}", "--progress_interval=0", *extra]


def outputs(bootstrap: str, topic: str) -> Counter[str]:
    return Counter(json.loads(m.value)["txn_id"] for m in consume_all(bootstrap, topic, timeout=60))


def run_with_failure(session: Session, args: list[str], bootstrap: str, topics: dict[str, str], group: str,
                     fail) -> tuple[Counter[str], set[str], dict]:
    """Streams EVENTS at RATE, kills one part after 8 s, waits until every event is out and committed."""
    result = launch(args)
    try:
        job = flink_cluster.running_job(session.rest_port)
        produced: list = []
        producer = threading.Thread(target=lambda: produced.append(
            produce_events(bootstrap, topics["in"], count=EVENTS, rate_per_s=RATE, seed=31)))
        producer.start()
        deadline = time.monotonic() + 120
        while session.completed_checkpoints(job) < 2:   # something to restore from
            assert time.monotonic() < deadline, "no checkpoint completed"
            time.sleep(0.5)
        time.sleep(4)
        fail()
        producer.join()
        wanted = set(produced[0].txn_ids)
        deadline = time.monotonic() + 300
        while not (wanted <= set(out := outputs(bootstrap, topics["out"]))
                   and committed_offsets(bootstrap, group, topics["in"]) == end_offsets(bootstrap, topics["in"])):
            assert time.monotonic() < deadline, \
                f"{len(wanted - set(out))} events missing; committed {committed_offsets(bootstrap, group, topics['in'])}"
            time.sleep(2)
        checkpoints = session.rest(f"/jobs/{job}/checkpoints")
        exceptions = session.rest(f"/jobs/{job}/exceptions")
    finally:
        result.cancel()
    return out, wanted, {"checkpoints": checkpoints, "exceptions": exceptions}


def assert_restored(flink: dict) -> None:
    assert flink["checkpoints"]["counts"]["restored"] >= 1, flink["checkpoints"]["counts"]
    assert flink["checkpoints"]["latest"]["restored"] is not None
    assert flink["exceptions"]["exceptionHistory"]["entries"], "Flink saw no failure"


# Written but not committed when a part dies: the batches in flight in each of the two
# workers plus what arrives during a checkpoint interval (x2 for the interval in progress).
AT_LEAST_ONCE_BOUND = 2 * (2 * MAX_IN_FLIGHT * BATCH_SIZE) + 2 * (CHECKPOINT_MS / 1000) * RATE


@pytest.mark.parametrize("part", ["sdk_worker", "taskmanager"])
def test_failover_at_least_once_loses_nothing(part: str, session: Session, flink_job_server_jar, bootstrap_servers,
                                              kafka_topic, scoring_service, tmp_path: Path) -> None:
    topics = {"in": kafka_topic(4, "fo-in"), "out": kafka_topic(2, "fo-out"), "dlq": kafka_topic(1, "fo-dlq")}
    group = f"g-failover-{part}"
    with WorkerPool(tmp_path / "pool.log") as pool:
        fail = pool.kill_worker if part == "sdk_worker" else (lambda: flink_cluster.kill_taskmanager(session.run_dir))
        args = job_args(session, flink_job_server_jar, pool, bootstrap_servers, topics, scoring_service.url, group)
        out, wanted, flink = run_with_failure(session, args, bootstrap_servers, topics, group, fail)
    duplicates = sum(out.values()) - len(out)
    print(f"\nfailover ({part}): {len(wanted)} events, {duplicates} duplicates (bound {AT_LEAST_ONCE_BOUND:.0f}), "
          f"restored checkpoints {flink['checkpoints']['counts']['restored']}")
    assert set(out) == wanted                                   # nothing lost, nothing invented
    assert duplicates <= AT_LEAST_ONCE_BOUND
    assert_restored(flink)


def test_failover_exactly_once_duplicates_nothing(session: Session, flink_job_server_jar, bootstrap_servers,
                                                  kafka_topic, scoring_service, tmp_path: Path) -> None:
    topics = {"in": kafka_topic(4, "foe-in"), "out": kafka_topic(2, "foe-out"), "dlq": kafka_topic(1, "foe-dlq")}
    group = "g-failover-eo"
    with WorkerPool(tmp_path / "pool.log") as pool:
        args = job_args(session, flink_job_server_jar, pool, bootstrap_servers, topics, scoring_service.url, group,
                        "--delivery=exactly_once")
        out, wanted, flink = run_with_failure(session, args, bootstrap_servers, topics, group,
                                              pool.kill_worker)
    assert set(out) == wanted
    assert max(out.values()) == 1, [k for k, n in out.items() if n > 1][:5]
    assert_restored(flink)
