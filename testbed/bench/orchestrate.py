"""`python -m testbed.bench [--quick]`: run the scenarios, then write JSON, plots and the report.

Design (see docs/bench/history.md, "Benchmark"): the drain mode reads up to the end offsets
seen at its start, and the FnApiRunner has no streaming mode. So each run
pre-fills the input topic with a backlog larger than any client can score in
the window, starts the client (one pipeline process running drains in a loop),
and from the service's first request (t0) a paced producer adds the intake
rate on top while a sampler records one sample a second. Every client gets
fresh topics, a fresh consumer group and a fresh scoring-service process.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from testbed.bench.sampler import KafkaProbe, Sampler
from testbed.bench.scenarios import OURS_MAX_IN_FLIGHT, S4_MAX_IN_FLIGHT, S4_SHARDS, Run, Scenario, all_scenarios
from testbed.kafka.admin import create_topic, delete_topic
from testbed.kafka.produce import produce_events
from testbed.scoring.process import ScoringServiceProcess, service_args
from testbed.support.local_ports import terminate

LOG = logging.getLogger("bench")
REPO = Path(__file__).resolve().parents[2]
FNAPI = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"
FIRST_REQUEST_TIMEOUT_S = 180.0   # a Flink session cluster of several TaskManagers takes ~60-90 s to its first request
CALIBRATION_REQUESTS = 150
FLINK_STOP_S = 90.0


def _say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def calibrate(run_dir: Path, batch_size: int = 1) -> dict[str, Any]:
    """No-load latency: sequential single requests to a fresh, idle service."""
    with ScoringServiceProcess(service_args(rate=1000), log_dir=run_dir / "calibration") as service:
        session = requests.Session()
        latencies = []
        for i in range(CALIBRATION_REQUESTS):
            body = [{"txn_id": f"cal-{i}-{j}", "account_id": "a", "card_id": "c", "merchant": "m", "amount": 1.0,
                     "currency": "EUR", "event_time": "2026-01-01T00:00:00.000Z"} for j in range(batch_size)]
            t = time.monotonic()
            resp = session.post(service.url + "/score", json=body, timeout=10)
            latencies.append((time.monotonic() - t) * 1000)
            resp.raise_for_status()
        stats = service.stats()
    from testbed.bench.metrics import percentile
    return {"requests": len(latencies), "client_p50_ms": percentile(latencies, 50),
            "client_p99_ms": percentile(latencies, 99), "service_p50_ms": stats["latency_p50_ms"],
            "service_p99_ms": stats["latency_p99_ms"]}


def _pipeline_args(run: Run, bootstrap: str, topics: dict[str, str], group: str, url: str,
                   extra: tuple[str, ...] = ()) -> list[str]:
    args = [f"--bootstrap_servers={bootstrap}", f"--input_topic={topics['in']}",
            f"--output_topic={topics['out']}", f"--dlq_topic={topics['dlq']}", f"--group_id={group}",
            f"--service_url={url}/score", f"--batch_size={run.batch_size}", *(extra if run.client == "ours" else ())]
    if run.workers > 1:
        return [*args, f"--max_in_flight={S4_MAX_IN_FLIGHT}", f"--num_shards={S4_SHARDS}", "--progress_interval=0"]
    if run.client == "ours":
        args.append(f"--max_in_flight={OURS_MAX_IN_FLIGHT}")
    return [FNAPI, *args]


def client_command(run: Run, telemetry: Path, pipeline_args: list[str]) -> list[str]:
    """The client process: drains in a loop on the FnApiRunner, or (several workers) a Flink job on a
    session cluster whose files go beside the telemetry."""
    if run.workers > 1:
        return [sys.executable, "-m", "testbed.bench.run_flink", "--workers", str(run.workers),
                "--run_dir", str(telemetry.parent / "flink"), "--", *pipeline_args]
    return [sys.executable, "-m", "testbed.bench.run_client", "--client", run.client,
            "--telemetry_out", str(telemetry), "--max_seconds", str(run.duration_s + 120), "--", *pipeline_args]


def _wait_first_request(service: ScoringServiceProcess, client: subprocess.Popen, workers: int) -> float | None:
    """When the job's first request reached the service. On Flink (`workers` > 1) that is the first
    from an SDK worker: the launcher's start-up probe (its own pid in the User-Agent) comes a minute
    before the job runs."""
    launcher = f"pid/{client.pid}"
    deadline = time.monotonic() + FIRST_REQUEST_TIMEOUT_S
    while time.monotonic() < deadline:
        if client.poll() is not None:
            return None
        try:
            stats = service.stats()
            if workers > 1 and any(not agent.endswith(launcher) for agent in stats["unique_by_client"]):
                return time.monotonic()
            if workers == 1 and stats["attempted_requests"] > 0:
                return time.monotonic()
        except requests.RequestException:
            pass
        time.sleep(0.05)
    return None


def execute_run(run: Run, bootstrap: str, out_dir: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    run_dir = out_dir / "runs" / run.key
    run_dir.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:6]
    topics = {"in": f"bench-{run.key}-{suffix}", "out": f"bench-{run.key}-{suffix}-out",
              "dlq": f"bench-{run.key}-{suffix}-dlq"}
    for name, partitions in (("in", max(4, run.workers)), ("out", 2), ("dlq", 1)):
        create_topic(bootstrap, topics[name], partitions)
    group = f"bench-{run.key}-{suffix}"
    record: dict[str, Any] = {"run": asdict(run), "topics": topics, "group": group, "extra_args": list(extra)}
    began = time.monotonic()
    if run.prefill:
        produced = produce_events(bootstrap, topics["in"], count=run.prefill, keep_ids=False, seed=1,
                                  run_id=f"pre{suffix}")
        record["prefill"] = {"produced": produced.produced, "seconds": round(produced.elapsed_s, 2)}
    service = ScoringServiceProcess(service_args(**run.service), log_dir=run_dir / "service").start()
    telemetry = run_dir / "telemetry.jsonl"
    telemetry.unlink(missing_ok=True)
    cmd = client_command(run, telemetry, _pipeline_args(run, bootstrap, topics, group, service.url, extra))
    client_log = (run_dir / "client.log").open("wb")
    client = subprocess.Popen(cmd, cwd=REPO, stdout=client_log, stderr=subprocess.STDOUT)
    producer: subprocess.Popen | None = None
    sampler: Sampler | None = None
    probe: KafkaProbe | None = None
    try:
        spawned = time.monotonic()
        t0 = _wait_first_request(service, client, run.workers)
        if t0 is None:
            record["error"] = f"client made no request within {FIRST_REQUEST_TIMEOUT_S:.0f} s (exit {client.poll()})"
            return record
        record["startup_s"] = round(t0 - spawned, 2)
        if run.intake_eps:
            producer = subprocess.Popen(
                [sys.executable, "-m", "testbed.kafka.produce", f"--bootstrap_servers={bootstrap}",
                 f"--topic={topics['in']}", f"--rate={run.intake_eps:.3f}/s", f"--duration={run.duration_s + 5:g}s",
                 f"--run_id=in{suffix}", "--seed=2"],
                cwd=REPO, stdout=(run_dir / "producer.log").open("wb"), stderr=subprocess.STDOUT)
        for fault in run.faults:
            service.fault(fault.kind, fault.duration_s, start_s=max(0.0, fault.at_s - (time.monotonic() - t0)),
                          factor=fault.factor)
        probe = KafkaProbe(bootstrap, topics["in"], group)
        sampler = Sampler(service.url, probe, str(telemetry), lambda: client.pid, t0)
        sampler.start()
        while time.monotonic() - t0 < run.duration_s:
            if client.poll() is not None:
                record["error"] = f"client exited early with {client.returncode}"
                break
            time.sleep(0.2)
        samples = sampler.stop()
        sampler = None
        record["samples"] = [s.to_dict() for s in samples]
        record["sampler_errors"] = 0
        record["final_service"] = service.stats()
    finally:
        if sampler is not None:
            sampler.stop()
        # A Flink client cancels its job and stops its cluster before it exits.
        record["client_exit"] = terminate(client, FLINK_STOP_S) if run.workers > 1 else terminate(client)
        client_log.close()
        terminate(producer)
        if probe is not None:
            probe.close()
        service.stop()
        for name in topics.values():
            try:
                delete_topic(bootstrap, name, wait=False)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        record["wall_s"] = round(time.monotonic() - began, 1)
    if producer is not None:
        record["producer"] = (run_dir / "producer.log").read_text(errors="replace").strip()[-300:]
    return record


def _start_broker(out_dir: Path):
    from testbed.kafka.broker import KafkaBroker
    workdir = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    broker = KafkaBroker(workdir)
    _say(f"starting Kafka in {workdir}")
    broker.start()
    return broker


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows, fewer clients in S2/S3 (< 5 min)")
    p.add_argument("--out", default=None, help="results folder (default bench-results/<timestamp>)")
    p.add_argument("--scenarios", default=None, help="comma list of S1,S2,S3,S3o,M (default all)")
    p.add_argument("--clients", default=None, help="comma list: only these clients")
    p.add_argument("--bootstrap_servers", default=None, help="use this broker instead of starting one")
    p.add_argument("--pipeline_arg", action="append", default=[], metavar="FLAG",
                   help="one more flag for our job in every run (an A/B of a job option); repeatable")
    p.add_argument("--memory_lag", type=int, default=None, metavar="EVENTS",
                   help="the M scenario's large lag (default 200,000 with --quick, else 1,000,000)")
    p.add_argument("--report_only", metavar="DIR", default=None,
                   help="re-analyse DIR/results.json (tables and plots) without running anything")
    args = p.parse_args(argv)
    if args.report_only:
        from testbed.bench.report import write_report
        out = Path(args.report_only)
        print(write_report(json.loads((out / "results.json").read_text()), out))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out or REPO / "bench-results" / (stamp + ("-quick" if args.quick else "")))
    out_dir.mkdir(parents=True, exist_ok=True)
    scenarios = all_scenarios(args.quick, args.scenarios.split(",") if args.scenarios else None, args.memory_lag)
    if args.clients:
        keep = set(args.clients.split(","))
        scenarios = [Scenario(s.name, s.title, tuple(r for r in s.runs if r.client in keep), s.notes)
                     for s in scenarios]
    started = time.monotonic()
    broker = None
    bootstrap = args.bootstrap_servers
    if bootstrap is None:
        broker = _start_broker(out_dir)
        bootstrap = broker.bootstrap_servers
    results: dict[str, Any] = {"quick": args.quick, "started": stamp, "machine": {"cpus": os.cpu_count()},
                               "scenarios": []}
    try:
        _say("calibrating no-load latency")
        results["calibration"] = calibrate(out_dir)
        _say(f"no-load latency: {results['calibration']}")
        for scenario in scenarios:
            entry = {"name": scenario.name, "title": scenario.title, "notes": scenario.notes, "runs": []}
            results["scenarios"].append(entry)
            for run in scenario.runs:
                _say(f"{scenario.name}: {run.key} ({run.duration_s:g} s window, prefill {run.prefill:,})")
                record = execute_run(run, bootstrap, out_dir, tuple(args.pipeline_arg))
                entry["runs"].append(record)
                _say(f"  done in {record.get('wall_s')} s; startup {record.get('startup_s')} s"
                     + (f"; ERROR {record['error']}" if record.get("error") else ""))
                (out_dir / "results.json").write_text(json.dumps(results))
    finally:
        if broker is not None:
            broker.stop()
            shutil.rmtree(broker.workdir, ignore_errors=True)
    results["wall_s"] = round(time.monotonic() - started, 1)
    (out_dir / "results.json").write_text(json.dumps(results))
    from testbed.bench.report import write_report
    report = write_report(results, out_dir)
    _say(f"results in {out_dir} ({results['wall_s']:.0f} s)")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
