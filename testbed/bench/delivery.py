"""What exactly-once costs: the same drain with --delivery=at_least_once and exactly_once, and on
Flink streaming the end-to-end latency (event time to visible to a read_committed consumer) at
several checkpoint intervals.

    python -m testbed.bench.delivery [--events 50000] [--out delivery.json] [--flink]

Drains (FnApiRunner, fast unlimited service) at batch 1 and 100: steady events/s (outputs ÷
first-to-last output timestamp span), wall time and peak RSS, from `overhead.measured`.
Flink (`--flink`): the job streams for `--seconds` while events arrive at `--rate`/s; a
read_committed consumer stamps each output when it becomes visible; latency = that stamp -
the event's own event_time (set when it was produced).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

from confluent_kafka import Consumer

from testbed.bench.metrics import percentile
from testbed.bench.overhead import FNAPI, REPO, measured
from testbed.flink.jobserver import FLINK_MINOR
from testbed.flink.jobserver import build as build_flink_jar
from testbed.kafka.admin import create_topic
from testbed.kafka.broker import KafkaBroker
from testbed.kafka.produce import produce_events
from testbed.scoring.process import ScoringServiceProcess, service_args

BATCH_SIZES = (1, 100)
DELIVERIES = ("at_least_once", "exactly_once")
CHECKPOINT_INTERVALS_MS = (1000, 5000, 10000)


def _topics(bootstrap: str, name: str, partitions: int = 4) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    topics = {k: f"{name}-{k}-{tag}" for k in ("in", "out", "dlq")}
    for key, topic in topics.items():
        create_topic(bootstrap, topic, partitions if key == "in" else 2)
    return topics


def _job(bootstrap: str, topics: dict[str, str], url: str, *extra: str) -> list[str]:
    return [f"--bootstrap_servers={bootstrap}", f"--input_topic={topics['in']}", f"--output_topic={topics['out']}",
            f"--dlq_topic={topics['dlq']}", f"--group_id=g-{topics['in']}", f"--service_url={url}/score",
            "--max_in_flight=32", "--initial_rate=10000", "--progress_interval=0", *extra]


def drains(bootstrap: str, url: str, events: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for batch in BATCH_SIZES:
        for delivery in DELIVERIES:
            topics = _topics(bootstrap, f"d{batch}{delivery[:3]}")
            produce_events(bootstrap, topics["in"], count=events, seed=1, keep_ids=False)
            out[f"batch{batch}_{delivery}"] = measured(
                [sys.executable, "-m", "pipelines.enrich_payments", FNAPI,
                 *_job(bootstrap, topics, url, f"--batch_size={batch}", f"--delivery={delivery}", "--drain_chunk=0")],
                bootstrap, [topics["out"], topics["dlq"]])
    return out


class VisibilityStamp(threading.Thread):
    """Reads the output topic read_committed and notes when each output became visible."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"stamp-{uuid.uuid4().hex}",
                                   "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                                   "enable.auto.commit": False, "fetch.wait.max.ms": 20})
        self._consumer.subscribe([topic])
        self.latency_ms: dict[str, float] = {}  # txn_id -> event time to visible
        self._done = threading.Event()  # not `_stop`: Thread has a method of that name

    def run(self) -> None:
        while not self._done.is_set():
            for msg in self._consumer.consume(500, timeout=0.1):
                if msg.error() is None:
                    seen = time.time()
                    out = json.loads(msg.value())
                    event_time = datetime.fromisoformat(out["event_time"].replace("Z", "+00:00"))
                    self.latency_ms.setdefault(out["txn_id"], (seen - event_time.timestamp()) * 1000)
        self._consumer.close()

    def stop(self) -> None:
        self._done.set()
        self.join(10)


def flink_latency(bootstrap: str, url: str, rate: float, seconds: float, delivery: str,
                  interval_ms: int) -> dict:
    from pipelines.enrich_payments import launch
    topics = _topics(bootstrap, f"lat{interval_ms}{delivery[:3]}", partitions=2)
    stamp = VisibilityStamp(bootstrap, topics["out"])
    stamp.start()
    result = launch(["--runner=FlinkRunner", f"--flink_job_server_jar={build_flink_jar()}", "--flink_master=[local]",
                     f"--flink_version={FLINK_MINOR}", "--environment_type=LOOPBACK", "--parallelism=1",
                     "--streaming", f"--checkpointing_interval={interval_ms}",
                     *_job(bootstrap, topics, url, "--batch_size=10", f"--delivery={delivery}")])
    try:
        # Warm-up events until one is visible, so the measured ones meet a running job.
        deadline = time.monotonic() + 180
        while not stamp.latency_ms and time.monotonic() < deadline:
            produce_events(bootstrap, topics["in"], count=10, seed=3)
            time.sleep(2)
        if not stamp.latency_ms:
            raise RuntimeError(f"Flink job ({delivery}, checkpoints {interval_ms} ms) wrote nothing in 180 s")
        measured_ids = produce_events(bootstrap, topics["in"], rate_per_s=rate, duration_s=seconds, seed=2).txn_ids
        time.sleep(max(10.0, 3 * interval_ms / 1000))
    finally:
        result.cancel()
        stamp.stop()
    lat = [stamp.latency_ms[t] for t in measured_ids if t in stamp.latency_ms]
    return {"produced": len(measured_ids), "visible": len(lat), "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99), "max_ms": max(lat) if lat else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--flink", action="store_true", help="also measure Flink streaming latency")
    p.add_argument("--rate", type=float, default=200.0, help="Flink: events/s produced while measuring")
    p.add_argument("--seconds", type=float, default=30.0, help="Flink: how long events are produced")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    report: dict = {"events": args.events, "started": datetime.now().isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker(Path(tmp) / "kafka", stop_with_parent=True) as broker, \
            ScoringServiceProcess(service_args(rate=1_000_000, burst=1_000_000, max_concurrency=1000)) as service:
        report["drains"] = drains(broker.bootstrap_servers, service.url, args.events)
        print(json.dumps(report["drains"], indent=2), flush=True)
        if args.flink:
            report["flink_latency"] = {f"{delivery}_checkpoint_{ms}ms": flink_latency(
                broker.bootstrap_servers, service.url, args.rate, args.seconds, delivery, ms)
                for ms in CHECKPOINT_INTERVALS_MS for delivery in DELIVERIES}
    for batch in BATCH_SIZES:
        alo, eos = report["drains"][f"batch{batch}_at_least_once"], report["drains"][f"batch{batch}_exactly_once"]
        if alo["steady_events_per_s"] and eos["steady_events_per_s"]:
            report[f"batch{batch}_exactly_once_over_at_least_once"] = round(
                eos["steady_events_per_s"] / alo["steady_events_per_s"], 3)
    out = Path(args.out or REPO / "bench-results" / f"delivery-{datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
