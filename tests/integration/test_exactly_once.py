"""--delivery=exactly_once against the real broker: each valid input's result (or dead letter)
appears exactly once to a read_committed consumer, across kill -9, broker restarts, scoring
outages, Flink stop/restart and a second job started with the same group."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from apache_beam.runners.runner import PipelineState

from pipelines.enrich_payments import launch, run
from testbed.kafka.admin import committed_offsets, consume_all, end_offsets
from testbed.kafka.produce import produce_events
from tests.integration.reliability_support import (
    JobProcess,
    fully_committed,
    job_args,
    make_topics,
    run_job,
    wait_for,
)

pytestmark = pytest.mark.integration

EOS = "--delivery=exactly_once"


def outputs(bootstrap: str, topic: str) -> Counter[str]:
    """txn_id -> times it appears, as a read_committed consumer (librdkafka's default) sees it."""
    return Counter(json.loads(m.value)["txn_id"] for m in consume_all(bootstrap, topic, timeout=120))


def dead_offsets(bootstrap: str, topic: str) -> Counter[tuple[int, int]]:
    return Counter((d["source"]["partition"], d["source"]["offset"])
                   for d in (json.loads(m.value) for m in consume_all(bootstrap, topic, timeout=120)))


def committed_some(bootstrap: str, group: str, topic: str) -> bool:
    """A transaction committed (end offsets also count open and aborted transactions' records)."""
    return sum(o or 0 for o in committed_offsets(bootstrap, group, topic).values()) > 0


def assert_exactly_once(bootstrap: str, topics, produced, group: str) -> None:
    out = outputs(bootstrap, topics.out)
    dead = dead_offsets(bootstrap, topics.dlq)
    assert set(out) == set(produced.txn_ids), "lost or unexpected results"
    assert max(out.values()) == 1, f"duplicates: {[t for t, n in out.items() if n > 1][:5]}"
    assert len(dead) == produced.malformed and (not dead or max(dead.values()) == 1)
    assert fully_committed(bootstrap, group, topics.inp)


def test_a_drain_writes_every_input_once_and_commits_its_offsets_with_the_outputs(
        bootstrap_servers, scoring_service) -> None:
    topics = make_topics(bootstrap_servers, "eos")
    produced = produce_events(bootstrap_servers, topics.inp, count=5_000, malformed_fraction=0.01, seed=31)
    summary = run(job_args(bootstrap_servers, topics, scoring_service.url, "g-eos", EOS, "--batch_size=20"))
    assert_exactly_once(bootstrap_servers, topics, produced, "g-eos")
    assert summary.counter("transactions") >= 4                       # one partition, one transaction at least
    assert summary.counter("records_written") == 5_000
    again = run(job_args(bootstrap_servers, topics, scoring_service.url, "g-eos", EOS))
    assert again.counter("events_in") == 0


def test_kill_9_mid_drain_then_rerun_loses_nothing_and_duplicates_nothing(
        bootstrap_servers, scoring_service_factory, tmp_path) -> None:
    topics = make_topics(bootstrap_servers, "eoskill")
    produced = produce_events(bootstrap_servers, topics.inp, count=6_000, malformed_fraction=0.01, seed=32)
    service = scoring_service_factory(rate=60)   # ~1,200 events/s at batch 20: the drain takes a while
    args = job_args(bootstrap_servers, topics, service.url, "g-eoskill", EOS, "--drain_chunk=2000")
    job = JobProcess(args, tmp_path, "first")
    wait_for(lambda: committed_some(bootstrap_servers, "g-eoskill", topics.inp) or job.proc.poll() is not None,
             timeout=180, what="the first committed transaction", interval=0.2)
    time.sleep(1.0)                                # well inside a drain: transactions are open
    job.kill()
    assert job.proc.returncode == -9, f"job ended on its own before the kill:\n{job.stderr_tail()}"
    before = sum(outputs(bootstrap_servers, topics.out).values())
    run_job(args, tmp_path, "second", timeout=300)
    print(f"\nkill -9 with {before} committed outputs; after the re-run every input exactly once")
    assert_exactly_once(bootstrap_servers, topics, produced, "g-eoskill")
    assert service.stats()["duplicate_txn_scores"] > 0 or before == 0   # rescored (at-least-once), written once


def test_a_scoring_outage_and_a_broker_restart_mid_run_lose_and_duplicate_nothing(
        kafka_broker_factory, scoring_service_factory, tmp_path) -> None:
    broker = kafka_broker_factory()
    bootstrap = broker.bootstrap_servers
    topics = make_topics(bootstrap, "eosfault")
    produced = produce_events(bootstrap, topics.inp, count=4_000, seed=33)
    service = scoring_service_factory(rate=60)
    args = job_args(bootstrap, topics, service.url, "g-eosfault", EOS, "--drain_chunk=2000")
    job = JobProcess(args, tmp_path, "faults")
    wait_for(lambda: committed_some(bootstrap, "g-eosfault", topics.inp) or job.proc.poll() is not None,
             timeout=180, what="the first committed transaction", interval=0.2)
    service.fault("outage", duration_s=5)
    time.sleep(6)
    broker.restart()
    code = job.wait(timeout=400)
    if code != 0:   # the broker stayed away past a client timeout: a re-run resumes from Kafka's frontier
        print(f"\njob failed during the restart (exit {code}); re-running")
        run_job(args, tmp_path, "rerun", timeout=300)
    assert_exactly_once(bootstrap, topics, produced, "g-eosfault")


def test_a_second_job_with_the_same_group_fences_the_first_and_nothing_is_written_twice(
        bootstrap_servers, scoring_service_factory, tmp_path) -> None:
    topics = make_topics(bootstrap_servers, "eosfence")
    produced = produce_events(bootstrap_servers, topics.inp, count=6_000, seed=34)
    # 100 events/s at batch 20: the first job is mid-drain (a minute) while the second one starts,
    # its start-up probe included (the first job keeps the service's quota busy: the probe waits its turn).
    service = scoring_service_factory(rate=5)
    args = job_args(bootstrap_servers, topics, service.url, "g-eosfence", EOS)
    first = JobProcess(args, tmp_path, "first")
    wait_for(lambda: committed_some(bootstrap_servers, "g-eosfence", topics.inp) or first.proc.poll() is not None,
             timeout=180, what="the first job's first transaction", interval=0.2)
    second = JobProcess(args, tmp_path, "second")      # started by mistake with the same group
    assert second.wait(timeout=400) == 0, second.stderr_tail()
    code = first.wait(timeout=400)
    tail = first.stderr_tail(40)
    print(f"\nfirst job exit {code}: {tail.splitlines()[-1] if tail else ''}")
    assert code != 0 and "fenced" in tail and "g-eosfence" in tail   # the fenced one fails, saying why
    if not fully_committed(bootstrap_servers, "g-eosfence", topics.inp):
        run_job(args, tmp_path, "finish", timeout=300)  # the fenced job's partitions the second had not reached
    assert_exactly_once(bootstrap_servers, topics, produced, "g-eosfence")


@pytest.mark.flink
def test_flink_streaming_stop_and_restart_mid_stream_is_exactly_once(flink_job_server_jar, bootstrap_servers,
                                                                      scoring_service) -> None:
    topics = make_topics(bootstrap_servers, "eosflink", partitions=2)
    group = "g-eosflink"
    args = ["--runner=FlinkRunner", f"--flink_job_server_jar={flink_job_server_jar}", "--flink_master=[local]",
            "--flink_version=1.19", "--environment_type=LOOPBACK", "--streaming", "--checkpointing_interval=2000",
            "--parallelism=1", *job_args(bootstrap_servers, topics, scoring_service.url, group, EOS)[1:],
            "--batch_size=10"]
    first = produce_events(bootstrap_servers, topics.inp, rate_per_s=300, count=1_500, seed=35)
    result = launch(args)
    try:
        wait_for(lambda: sum(o or 0 for o in committed_offsets(bootstrap_servers, group, topics.inp).values()) >= 500,
                 timeout=180, what="500 committed inputs")
    finally:
        result.cancel()
    second = produce_events(bootstrap_servers, topics.inp, count=1_500, seed=36)
    result = launch(args)
    try:
        wait_for(lambda: fully_committed(bootstrap_servers, group, topics.inp), timeout=240,
                 what="the restarted job to commit to the end")
    finally:
        result.cancel()
    assert result.state == PipelineState.CANCELLED
    out = outputs(bootstrap_servers, topics.out)
    assert set(out) == set(first.txn_ids) | set(second.txn_ids)
    assert max(out.values()) == 1
    assert committed_offsets(bootstrap_servers, group, topics.inp) == end_offsets(bootstrap_servers, topics.inp)
