"""A streaming soak on a local Flink session cluster, with a failover every few minutes.

    python -m testbed.bench.soak [--minutes 30] [--failover_every 5] [--out DIR]

The rates this project is built for: 100,000 events/min in, a scoring service that
sustains 20,000 requests/min (batch 10, so it is not the bottleneck here; the point is
the long run). A JobManager and two TaskManagers, parallelism 2, the Python stages in a
worker pool of two processes, checkpoints every 5 s. Every `--failover_every` minutes
one part is killed with SIGKILL, an SDK worker and a TaskManager (replaced) in turn.
Sampled every 10 s: consumer lag, outputs, RSS of the SDK workers and the TaskManagers.
At the end the input stops, the job catches up, and Kafka is read back: events lost,
duplicates, committed offsets against the end offsets. Writes `soak.json` into `--out`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

from pipelines.enrich_payments import launch
from testbed.flink import cluster, jobserver
from testbed.flink.worker_pool import WorkerPool
from testbed.kafka.admin import committed_offsets, consume_all, create_topic, end_offsets
from testbed.kafka.broker import KafkaBroker
from testbed.kafka.produce import produce_events
from testbed.scoring.process import ScoringServiceProcess, service_args
from testbed.support.local_ports import free_ports

REPO = Path(__file__).resolve().parents[2]
SERVICE_REQUESTS_PER_S = 20_000 / 60
TASK_MANAGERS = 2   # of one slot each
CLUSTER = {"taskmanager.numberOfTaskSlots": 1, "heartbeat.interval": 1000, "heartbeat.timeout": 6000,
           "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": 1000,
           "restart-strategy.fixed-delay.delay": "2 s"}


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def rss_windows(samples: list[dict], window_s: float = 300.0) -> dict:
    """RSS (SDK workers + TaskManagers) per 5-minute window, as medians: a single sample can fall just
    after a kill, while a replacement starts small. The ratio is the largest later window's median over
    the 5-10 minute window's (the first after warm-up)."""
    windows: dict[int, list[float]] = {}
    for s in samples:
        windows.setdefault(int(s["t_s"] // window_s), []).append(s["rss_workers_mb"] + s["rss_taskmanagers_mb"])
    medians = {k: statistics.median(v) for k, v in sorted(windows.items()) if k >= 1}
    if not medians:
        return {"rss_window_medians_mb": {}, "rss_ratio": None}
    base = medians[min(medians)]
    return {"rss_window_medians_mb": {f"{int(k * window_s // 60)}-{int((k + 1) * window_s // 60)} min": round(v)
                                      for k, v in medians.items()},
            "rss_ratio": round(max(medians.values()) / base, 3),
            "rss_max_sample_ratio": round(max(s["rss_workers_mb"] + s["rss_taskmanagers_mb"] for s in samples
                                              if s["t_s"] >= window_s) / base, 3)}


def lag(bootstrap: str, group: str, topic: str) -> int:
    committed = committed_offsets(bootstrap, group, topic)
    return sum(end - (committed.get(p) or 0) for p, end in end_offsets(bootstrap, topic).items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--failover_every", type=float, default=5.0, help="minutes between failovers")
    parser.add_argument("--events_per_min", type=float, default=100_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or REPO / "bench-results" / f"soak-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    duration_s = args.minutes * 60
    samples: list[dict] = []
    failovers: list[dict] = []
    jar = jobserver.build()
    port = free_ports(1)[0]
    work = out / "work"   # kept: the broker's and the cluster's logs explain a run that went wrong
    with KafkaBroker(work / "kafka") as broker, \
            ScoringServiceProcess(service_args(rate=SERVICE_REQUESTS_PER_S, burst=50)) as service, \
            WorkerPool(out / "pool.log") as pool:
        run_dir = work / "flink"
        cluster.up(port, run_dir, taskmanagers=TASK_MANAGERS, overrides=CLUSTER)
        bootstrap, base, group = broker.bootstrap_servers, f"soak-{uuid.uuid4().hex[:6]}", "g-soak"
        topics = {"in": f"{base}-in", "out": f"{base}-out", "dlq": f"{base}-dlq"}
        for name, partitions in (("in", 8), ("out", 4), ("dlq", 1)):
            create_topic(bootstrap, topics[name], partitions)
        result = launch(["--runner=FlinkRunner", f"--flink_job_server_jar={jar}", f"--flink_master=localhost:{port}",
                         "--flink_version=1.19", "--streaming", "--checkpointing_interval=5000",
                         *pool.environment_args(2, task_managers=TASK_MANAGERS), f"--bootstrap_servers={bootstrap}",
                         f"--input_topic={topics['in']}", f"--output_topic={topics['out']}",
                         f"--dlq_topic={topics['dlq']}", f"--group_id={group}", f"--service_url={service.url}/score",
                         "--batch_size=10", "--max_batch_wait=0.5", "--progress_interval=0"])
        try:
            job = cluster.running_job(port)
            produced: list = []
            producer = threading.Thread(target=lambda: produced.append(produce_events(
                bootstrap, topics["in"], rate_per_s=args.events_per_min / 60, duration_s=duration_s, seed=41)))
            started = time.monotonic()
            producer.start()
            next_failover, kinds = started + args.failover_every * 60, ["sdk_worker", "taskmanager"]
            while producer.is_alive():
                now = time.monotonic()
                if now >= next_failover:
                    kind = kinds[len(failovers) % 2]
                    pid = pool.kill_worker() if kind == "sdk_worker" else cluster.kill_taskmanager(run_dir)
                    failovers.append({"at_s": round(now - started, 1), "killed": kind, "pid": pid})
                    print(f"{now - started:6.0f} s: killed {kind} {pid}", flush=True)
                    next_failover += args.failover_every * 60
                sample = {"t_s": round(now - started, 1), "lag": lag(bootstrap, group, topics["in"]),
                          "outputs": sum(end_offsets(bootstrap, topics["out"]).values()),
                          "rss_workers_mb": round(rss_mb(pool.worker_pids()), 1),
                          "rss_taskmanagers_mb": round(rss_mb(cluster.taskmanager_pids(run_dir)), 1)}
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                time.sleep(10)
            wanted = set(produced[0].txn_ids)
            deadline = time.monotonic() + 600
            while lag(bootstrap, group, topics["in"]) > 0 and time.monotonic() < deadline:
                time.sleep(5)
            caught_up_s = round(time.monotonic() - started - duration_s, 1)
            outputs = Counter(json.loads(m.value)["txn_id"] for m in consume_all(bootstrap, topics["out"], timeout=300))
            checkpoints = cluster.rest(port, f"/jobs/{job}/checkpoints")["counts"]
            history = cluster.failover_history(port, job)
        finally:
            result.cancel()
            cluster.down(port, run_dir)
    rss = rss_windows(samples)
    report = {
        "minutes": args.minutes, "events_per_s": round(args.events_per_min / 60, 1), "service_requests_per_s":
        round(SERVICE_REQUESTS_PER_S, 1), "produced": len(wanted), "lost": len(wanted - set(outputs)),
        "duplicates": sum(outputs.values()) - len(outputs), "failovers": failovers,
        "completed_checkpoints": checkpoints.get("completed"),
        "restarts": history["restarts"], "restored_from_checkpoints": history["restored"],
        "caught_up_after_input_s": caught_up_s,
        "max_lag": max(s["lag"] for s in samples), "median_lag": statistics.median(s["lag"] for s in samples),
        **rss,
        "samples": samples,
    }
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    return 0 if report["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
