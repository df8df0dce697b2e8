"""Process and broker failures mid-drain: kill -9 of the job, restart of the broker.

Delivery is at-least-once. The FnApiRunner runs a drain stage by stage (all
records of a run are read, then scored and written, then committed), so the
writer commits what it has delivered every `--commit_interval` seconds itself;
what a crash can leave written-but-uncommitted is that much work, and never
more than one drain run (`--drain_chunk` offsets).
Output records carry the txn_id as Kafka key and as a field, so consumers
de-duplicate on it.
"""
from __future__ import annotations

import time

import pytest

from testbed.kafka.admin import committed_offsets, end_offsets
from testbed.kafka.produce import produce_events
from tests.integration.reliability_support import (
    JobProcess,
    fully_committed,
    job_args,
    make_topics,
    output_count,
    run_job,
    txn_ids,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 6_000
CHUNK = 1_000


def test_kill_9_mid_drain_then_rerun_loses_nothing_and_duplicates_at_most_one_chunk(
        bootstrap_servers, scoring_service_factory, tmp_path) -> None:
    topics = make_topics(bootstrap_servers, "crash")
    produced = produce_events(bootstrap_servers, topics.inp, count=EVENTS, seed=11)
    service = scoring_service_factory(rate=60)  # ~1,200 events/s at batch 20: the drain takes a while
    args = job_args(bootstrap_servers, topics, service.url, "g-crash", f"--drain_chunk={CHUNK}")

    job = JobProcess(args, tmp_path, "first")
    wait_for(lambda: output_count(bootstrap_servers, topics.out) > 0 or job.proc.poll() is not None,
             timeout=180, what="the first outputs", interval=0.1)
    job.kill()
    written_before_kill = output_count(bootstrap_servers, topics.out)
    assert job.proc.returncode == -9, f"job ended on its own before the kill:\n{job.stderr_tail()}"

    run_job(args, tmp_path, "second", timeout=300)
    counts = txn_ids(bootstrap_servers, topics.out)
    duplicates = sum(counts.values()) - len(counts)
    print(f"\ncrash: {written_before_kill} outputs before kill -9, {duplicates} duplicates after re-run "
          f"(bound: --drain_chunk={CHUNK})")
    assert set(counts) == set(produced.txn_ids)           # nothing lost
    assert max(counts.values()) <= 2                       # one crash -> at most one replay
    assert duplicates <= CHUNK                             # the in-flight bound of a drain run
    assert fully_committed(bootstrap_servers, "g-crash", topics.inp)


def test_broker_restart_mid_drain_rides_it_out_or_fails_clearly_and_rerun_loses_nothing(
        kafka_broker_factory, scoring_service_factory, tmp_path) -> None:
    broker = kafka_broker_factory()
    bootstrap = broker.bootstrap_servers
    topics = make_topics(bootstrap, "restart")
    produced = produce_events(bootstrap, topics.inp, count=4_000, seed=12)
    service = scoring_service_factory(rate=60)
    args = job_args(bootstrap, topics, service.url, "g-restart", f"--drain_chunk={CHUNK}")

    job = JobProcess(args, tmp_path, "during-restart")
    wait_for(lambda: output_count(bootstrap, topics.out) > 0 or job.proc.poll() is not None,
             timeout=180, what="the first outputs", interval=0.1)
    began = time.monotonic()
    broker.restart()
    print(f"\nbroker restarted in {time.monotonic() - began:.1f} s")
    code = job.wait(timeout=400)
    if code != 0:  # allowed, but the reason must be readable
        tail = job.stderr_tail(5)
        print(f"job failed during the restart (exit {code}): {tail}")
        assert any(word in tail for word in ("Kafka", "KafkaError", "_TRANSPORT", "Broker")), tail
    else:
        print("job rode out the broker restart")

    run_job(args, tmp_path, "rerun", timeout=300)
    counts = txn_ids(bootstrap, topics.out)
    print(f"duplicates after broker restart: {sum(counts.values()) - len(counts)}")
    assert set(counts) == set(produced.txn_ids)
    assert sum(counts.values()) - len(counts) <= CHUNK
    assert fully_committed(bootstrap, "g-restart", topics.inp)


def test_a_long_drain_commits_while_it_runs_not_only_at_its_end(
        bootstrap_servers, scoring_service_factory, tmp_path) -> None:
    """One drain run of 8,000 events at ~1,000 events/s: the group's offsets move before the run
    ends (the writer commits what it has delivered every --commit_interval seconds of work), so a
    crash repeats that much work, not the whole run. Before: 0 at every sample, then all at the end."""
    topics = make_topics(bootstrap_servers, "progress")
    produce_events(bootstrap_servers, topics.inp, count=8_000, seed=12)
    service = scoring_service_factory(rate=100)
    args = job_args(bootstrap_servers, topics, service.url, "g-progress", "--batch_size=10", "--drain_chunk=0",
                    "--commit_interval=2")
    total = sum(end_offsets(bootstrap_servers, topics.inp).values())

    job = JobProcess(args, tmp_path, "drain")
    samples: list[int] = []
    while job.proc.poll() is None:
        samples.append(sum(v or 0 for v in committed_offsets(bootstrap_servers, "g-progress", topics.inp).values()))
        time.sleep(0.5)
    assert job.proc.returncode == 0, job.stderr_tail()
    print(f"\ncommitted while running: {samples}")
    assert any(0 < s < total for s in samples), samples
    assert samples == sorted(samples)                       # forward only
    assert fully_committed(bootstrap_servers, "g-progress", topics.inp)
