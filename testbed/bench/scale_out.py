"""Does the job scale out on Flink? Steady events/s at parallelism 1 and 2 on a local session cluster.

    python -m testbed.bench.scale_out [--events 200000] [--batch_size 100] [--rounds 2] [--out DIR]

A JobManager and two TaskManagers of one slot each, one SDK worker process per
TaskManager (`WorkerPool.environment_args`): each worker runs every stage of its
slot, so nothing is pinned to a worker that another slot also uses (see
docs/bench/2026-12-07/s4-load-balance.md). The scoring service answers far above
the job's pace. One backlog of `--events` is enriched by a streaming job of a
fresh group at parallelism 1, then 2, `--rounds` times in turn; outputs are
counted from Kafka every half second and the steady rate is the one between 10 %
and 90 % of the backlog (start-up and tail left out). Each job is cancelled
through Flink's REST API and its slots are free before the next starts. Writes
`scale_out.json` into `--out`; issue 28 asks for parallelism 2 >= 1.5 x 1. Each run
also records how busy the machine's CPUs were (all processes: broker, Flink,
service, workers) and the SDK workers' CPU seconds, which say whether a second
worker had a core to run on.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import psutil
from confluent_kafka import KafkaException

from pipelines.enrich_payments import launch
from testbed.flink import cluster, jobserver
from testbed.flink.worker_pool import WorkerPool
from testbed.kafka.admin import create_topic, end_offsets
from testbed.kafka.broker import KafkaBroker
from testbed.kafka.produce import produce_events
from testbed.scoring.process import ScoringServiceProcess, service_args
from testbed.support.local_ports import free_ports

REPO = Path(__file__).resolve().parents[2]
TASK_MANAGERS = 2   # of one slot each
CLUSTER = {"taskmanager.numberOfTaskSlots": 1}
RUN_TIMEOUT_S = 600.0
SLOTS_TIMEOUT_S = 60.0


def steady_rate(samples: list[tuple[float, int]], total: int) -> float | None:
    """Events/s between the first samples at or above 10 % and 90 % of `total`."""
    low = next(((t, n) for t, n in samples if n >= 0.1 * total), None)
    high = next(((t, n) for t, n in samples if n >= 0.9 * total), None)
    if low is None or high is None or high[0] <= low[0]:
        return None
    return (high[1] - low[1]) / (high[0] - low[0])


def new_running_job(port: int, known: set[str], timeout_s: float = 120.0) -> str:
    """The id of a RUNNING job not in `known` (the job just submitted), waiting for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [j["jid"] for j in cluster.rest(port, "/jobs/overview")["jobs"]
                if j["state"] == "RUNNING" and j["jid"] not in known]
        if jobs:
            return jobs[0]
        time.sleep(0.5)
    raise cluster.ClusterError(f"the submitted job is not RUNNING after {timeout_s:.0f} s")


def wait_for_free_slots(port: int, slots: int) -> None:
    deadline = time.monotonic() + SLOTS_TIMEOUT_S
    while time.monotonic() < deadline:
        info = cluster.overview(port) or {}
        if int(info.get("slots-available", 0)) >= slots:
            return
        time.sleep(0.5)
    raise cluster.ClusterError(f"fewer than {slots} free slots {SLOTS_TIMEOUT_S:.0f} s after the cancel")


def enrich(port: int, jar: Path, pool: WorkerPool, bootstrap: str, topic: str, url: str, events: int,
           parallelism: int, batch_size: int) -> dict:
    name = f"scale-p{parallelism}-{uuid.uuid4().hex[:6]}"
    out, dlq = f"{name}-out", f"{name}-dlq"
    create_topic(bootstrap, out, 4)
    create_topic(bootstrap, dlq, 1)
    known = {j["jid"] for j in cluster.rest(port, "/jobs/overview")["jobs"]}
    launch(["--runner=FlinkRunner", f"--flink_job_server_jar={jar}", f"--flink_master=localhost:{port}",
            "--flink_version=1.19", "--streaming", "--checkpointing_interval=5000",
            *pool.environment_args(parallelism, task_managers=parallelism),
            f"--bootstrap_servers={bootstrap}", f"--input_topic={topic}", f"--output_topic={out}",
            f"--dlq_topic={dlq}", f"--group_id={name}", "--start_position=earliest", f"--service_url={url}/score",
            f"--batch_size={batch_size}", "--max_batch_wait=0.5", "--progress_interval=0"])
    job = new_running_job(port, known)
    samples: list[tuple[float, int]] = []
    try:
        psutil.cpu_percent(None)   # the machine's busy share is measured from here
        started = time.monotonic()
        while time.monotonic() - started < RUN_TIMEOUT_S:
            try:
                written = sum(end_offsets(bootstrap, out).values()) + sum(end_offsets(bootstrap, dlq).values())
            except KafkaException:   # e.g. FENCED_LEADER_EPOCH while a new topic's metadata settles
                time.sleep(0.5)
                continue
            samples.append((time.monotonic() - started, written))
            if written >= events:
                break
            time.sleep(0.5)
        machine_busy = psutil.cpu_percent(None) / 100
        worker_cpu_s = sum(_cpu_s(pid) for pid in pool.worker_pids())
        workers = len(pool.worker_pids())
    finally:
        cluster.cancel_job(port, job)
        wait_for_free_slots(port, TASK_MANAGERS)
    rate = steady_rate(samples, events)
    return {"parallelism": parallelism, "written": samples[-1][1] if samples else 0,
            "seconds_to_all": round(samples[-1][0], 1) if samples else None,
            "steady_events_per_s": round(rate, 1) if rate else None, "sdk_workers": workers,
            "machine_cpu_busy": round(machine_busy, 3), "sdk_workers_cpu_s": round(worker_cpu_s, 1)}


def _cpu_s(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or REPO / "bench-results" / f"scale-out-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    jar, port, runs = jobserver.build(), free_ports(1)[0], []
    work = out / "work"   # kept: the broker's and the cluster's logs explain a run that went wrong
    with KafkaBroker(work / "kafka") as broker, \
            ScoringServiceProcess(service_args(rate=1_000_000, burst=1_000_000, max_concurrency=1000)) as service:
        bootstrap, topic = broker.bootstrap_servers, f"scale-{uuid.uuid4().hex[:6]}-in"
        create_topic(bootstrap, topic, 8)
        produce_events(bootstrap, topic, count=args.events, keep_ids=False, seed=28)
        cluster.up(port, work / "flink", taskmanagers=TASK_MANAGERS, overrides=CLUSTER)
        try:
            for _ in range(args.rounds):
                for parallelism in (1, 2):
                    with WorkerPool(out / f"pool-{len(runs)}.log") as pool:   # fresh workers per run
                        runs.append(enrich(port, jar, pool, bootstrap, topic, service.url, args.events,
                                           parallelism, args.batch_size))
                    print(json.dumps(runs[-1]), flush=True)
        finally:
            cluster.down(port, work / "flink")
    rates = {p: [r["steady_events_per_s"] for r in runs if r["parallelism"] == p and r["steady_events_per_s"]]
             for p in (1, 2)}
    pairs = [r2 / r1 for r1, r2 in zip(rates[1], rates[2])]
    report = {"events": args.events, "batch_size": args.batch_size, "rounds": args.rounds, "runs": runs,
              "p2_over_p1_per_round": [round(x, 3) for x in pairs],
              "p2_over_p1_median": round(statistics.median(pairs), 3) if pairs else None}
    (out / "scale_out.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
