"""Many separate jobs on one API quota, in front of a limiter they do not know (issue 29's benchmark).

    python -m testbed.bench.fleet_quota [--jobs 8] [--quota 200] [--seconds 60] [--kill_coordinator_at 25]
                                        [--without_quota] [--out DIR]

`--jobs` separate job processes (FnApiRunner drains, each on its own topic sized to last
about `--seconds` at its fair share), nginx `limit_req` at `--quota` requests/s with plain
429s in front of a fast scoring service, and, unless `--without_quota`, a real Redis as the
quota's coordinator (`--quota_coordinator`, `--quota_rps=--quota`). Optionally Redis is
killed at `--kill_coordinator_at` s for `--gap` s and started again. Reported: the requests
nginx let through per 1-second window (sampled from the service), p99 of those windows over
the quota, 429s as a share of all attempts, the fleet's rate over the quota while every job
ran, Jain's fairness over the jobs' rates, events lost, the coordinator's script calls per
worker per second, and the windows during the coordinator gap. Writes `fleet_quota.json`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from testbed.bench.overhead import FNAPI
from testbed.kafka.admin import consume_all, create_topic
from testbed.kafka.broker import KafkaBroker
from testbed.kafka.produce import produce_events
from testbed.limiters.nginx import NginxLimiter
from testbed.redis.server import RedisServer
from testbed.scoring.process import ScoringServiceProcess, service_args

REPO = Path(__file__).resolve().parents[2]
BATCH = 10


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if any(values) else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def steady_windows(per_s: list[tuple[float, int]], first_done_s: float, settle_s: float = 5.0) -> list[int]:
    """Requests per 1-second window while every job runs: from `settle_s` after the first request got
    through (the jobs' start-up is Beam's, not the quota's) until the first job is done."""
    begun = next((t for t, n in per_s if n > 0), None)
    return [] if begun is None else [n for t, n in per_s if begun + settle_s <= t <= first_done_s - 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--quota", type=float, default=200.0, help="requests/s: nginx's rate and the shared quota")
    p.add_argument("--seconds", type=float, default=60.0, help="how long each job's input lasts at its fair share")
    p.add_argument("--kill_coordinator_at", type=float, default=None, help="s after the start (off when unset)")
    p.add_argument("--gap", type=float, default=10.0, help="s the coordinator stays dead")
    p.add_argument("--without_quota", action="store_true", help="the baseline: each job learns the limit alone")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or REPO / "bench-results" / f"fleet-quota-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    events = int(args.quota / args.jobs * args.seconds * BATCH)
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker(Path(tmp) / "kafka", stop_with_parent=True) as broker, \
            ScoringServiceProcess(service_args(rate=1_000_000, no_ratelimit_headers=True)) as service, \
            NginxLimiter(service.url, args.quota, burst=10) as nginx, RedisServer() as redis_server:
        bs = broker.bootstrap_servers
        for job in range(args.jobs):
            for name, partitions in (("in", 2), ("out", 1), ("dlq", 1)):
                create_topic(bs, f"j{job}-{name}", partitions)
            produce_events(bs, f"j{job}-in", count=events, seed=100 + job, keep_ids=False)
        windows: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                windows.append((time.monotonic(), service.stats()["accepted_requests"]))

        quota_args = [] if args.without_quota else [f"--quota_coordinator={redis_server.url}",
                                                    f"--quota_rps={args.quota:g}", "--quota_name=bench"]
        started = time.monotonic()
        threading.Thread(target=sample, daemon=True).start()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "pipelines.enrich_payments", FNAPI, f"--bootstrap_servers={bs}",
             f"--input_topic=j{job}-in", f"--output_topic=j{job}-out", f"--dlq_topic=j{job}-dlq",
             f"--group_id=g{job}", f"--service_url={nginx.url}/score", f"--batch_size={BATCH}",
             "--progress_interval=0", f"--summary_path={out / f'job{job}.json'}", *quota_args],
            stdout=subprocess.DEVNULL, stderr=open(out / f"job{job}.log", "w")) for job in range(args.jobs)]
        gap: tuple[float, float] | None = None
        if args.kill_coordinator_at is not None and not args.without_quota:
            time.sleep(max(0.0, started + args.kill_coordinator_at - time.monotonic()))
            redis_server.kill()
            killed = time.monotonic()
            time.sleep(args.gap)
            redis_server.start()
            gap = (killed - started, time.monotonic() - started)
        ends = []
        for proc in procs:
            proc.wait(timeout=3600)
            ends.append(time.monotonic() - started)
        stop.set()
        script_calls = 0
        if not args.without_quota:
            import redis
            stats = redis.Redis.from_url(redis_server.url).info("commandstats")
            script_calls = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
        lost = sum(events - len(consume_all(bs, f"j{job}-out", timeout=60)) for job in range(args.jobs))
    codes = [proc.returncode for proc in procs]
    summaries = [json.loads((out / f"job{job}.json").read_text()) for job in range(args.jobs)
                 if (out / f"job{job}.json").exists()]
    attempts = sum(v for s in summaries for k, v in s["counters"].items() if k.startswith("enrich/requests_"))
    refused = sum(s["counters"].get("enrich/requests_429", 0) for s in summaries)
    per_s = [(t - started, b - a) for (_, a), (t, b) in zip(windows, windows[1:])]
    all_running = steady_windows(per_s, min(ends))
    in_gap = [n for t, n in per_s if gap and gap[0] <= t <= gap[1]]
    rates = [s["counters"].get("enrich/events_scored", 0) / BATCH / s["wall_s"] for s in summaries]
    report = {
        "jobs": args.jobs, "quota_rps": args.quota, "with_quota": not args.without_quota, "exit_codes": codes,
        "events_per_job": events, "lost": lost,
        "p99_window_over_quota": round(percentile(all_running, 0.99) / args.quota, 3) if all_running else None,
        "max_window_over_quota": round(max(all_running) / args.quota, 3) if all_running else None,
        "share_429": round(refused / attempts, 4) if attempts else None,
        "fleet_rate_over_quota": round(sum(all_running) / len(all_running) / args.quota, 3) if all_running else None,
        "jain": round(jain(rates), 3), "job_rates_rps": [round(r, 1) for r in rates],
        "first_job_done_s": round(min(ends), 1), "last_job_done_s": round(max(ends), 1),
        "coordinator_calls_per_worker_s": round(script_calls / sum(ends), 3) if script_calls else None,
        "coordinator_gap_s": [round(g, 1) for g in gap] if gap else None,
        "max_window_in_gap_over_quota": round(max(in_gap) / args.quota, 3) if in_gap else None,
        "windows": per_s,
    }
    (out / "fleet_quota.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "windows"}, indent=2))
    return 0 if lost == 0 and codes == [0] * args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
