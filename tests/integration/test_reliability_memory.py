"""Memory under a large backlog: the drain's RSS stays flat while most of the backlog waits in Kafka.

A batch runner executes a drain stage by stage, so one run holds its records in
the runner's buffers; the job drains in runs of `--drain_chunk` records, each
committed before the next, so memory follows the chunk, not the backlog.
"""
from __future__ import annotations

import time

import psutil
import pytest

from testbed.kafka.admin import committed_offsets
from testbed.kafka.produce import produce_events
from tests.integration.reliability_support import JobProcess, job_args, make_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKLOG = 200_000
CHUNK = 5_000
WINDOW_S = 100.0


def rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def test_rss_stays_flat_while_the_backlog_waits_in_kafka(
        bootstrap_servers, scoring_service_factory, tmp_path) -> None:
    topics = make_topics(bootstrap_servers, "memory")
    produced = produce_events(bootstrap_servers, topics.inp, count=BACKLOG, seed=41, keep_ids=False)
    backlog_bytes = produced.produced * 200  # ~200 bytes per encoded event (what the runner buffers)
    service = scoring_service_factory(rate=40)  # <= 800 events/s at batch 20: the backlog outlives the window
    job = JobProcess(job_args(bootstrap_servers, topics, service.url, "g-memory", f"--drain_chunk={CHUNK}"),
                     tmp_path, "memory")
    proc = psutil.Process(job.pid)
    samples = []  # (t, rss, items scored by the service)
    started = time.monotonic()
    committed_during_run = 0
    try:
        while time.monotonic() - started < WINDOW_S and job.proc.poll() is None:
            samples.append((time.monotonic() - started, rss(proc), service.stats()["accepted_items"]))
            if len(samples) % 10 == 0:
                committed_during_run = sum(v or 0 for v in
                                           committed_offsets(bootstrap_servers, "g-memory", topics.inp).values())
                if committed_during_run >= 2 * CHUNK:
                    break
            time.sleep(0.5)
    finally:
        job.kill()
    assert job.proc.returncode == -9, f"job ended early:\n{job.stderr_tail()}"

    warm = next((s for s in samples if s[2] >= 0.1 * CHUNK), None)
    assert warm is not None, f"scoring never reached 10 % of a chunk in {WINDOW_S:.0f} s"
    after = [s[1] for s in samples if s[0] >= warm[0]]
    peak = max(after)
    lag = BACKLOG - committed_during_run
    print(f"\nmemory: RSS {warm[1] / 2**20:.0f} MiB at 10 % of the first chunk, peak {peak / 2**20:.0f} MiB "
          f"after ({len(after)} samples over {samples[-1][0] - warm[0]:.0f} s); committed {committed_during_run} "
          f"during the run, lag still {lag} of {BACKLOG}; backlog ~{backlog_bytes / 2**20:.0f} MiB encoded")
    assert committed_during_run >= CHUNK            # commits happen during a drain, per chunk
    assert lag >= BACKLOG // 2                      # most of the backlog still waits in Kafka
    assert peak <= 1.5 * warm[1]
