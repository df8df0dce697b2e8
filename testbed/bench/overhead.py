"""What the enrichment costs on top of moving the records: the pipeline's events/s
÷ a pass-through Kafka→Kafka drain (same reader, writer and committer), on the same
runner, in the same run, against a fast scoring service that never limits.

    python -m testbed.bench.overhead [--events 50000] [--batch_size 100] [--flink]

Each drain runs in its own process (so peak RSS is per pipeline) over its own copy of
the backlog. `--flink` adds the enrichment drain on Flink embedded in the job server.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from testbed.flink_jobserver import build as build_flink_jar
from testbed.kafka_admin import create_topic
from testbed.kafka_broker import KafkaBroker
from testbed.produce import produce_events
from testbed.scoring_process import ScoringServiceProcess, service_args

FNAPI = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"

PASS_THROUGH = """
import sys, apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.read import ReadFromKafka
from transforms.kafka.write import WriteToKafka
from transforms.kafka.commit import CommitOffsets
from transforms.kafka.records import OutboundRecord
bootstrap, source, sink, group = sys.argv[1:5]
conn = KafkaConnection(bootstrap, group_id=group)
with beam.Pipeline(options=PipelineOptions([sys.argv[5]])) as p:
    (p | ReadFromKafka(conn, source, bounded=True)
       | beam.Map(lambda r: OutboundRecord(sink, r.key, r.value or b"", r.position))
       | WriteToKafka(conn) | CommitOffsets(conn))
"""


def timed(cmd: list[str]) -> dict[str, float]:
    """Runs a drain process; wall time and its peak RSS (sampled every 0.2 s)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {proc.stderr.read()[-2000:]}")
    return {"wall_s": time.monotonic() - started, "peak_rss_mb": peak / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--flink", action="store_true", help="also drain on Flink [local]")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker(Path(tmp) / "kafka", stop_with_parent=True) as broker, \
            ScoringServiceProcess(service_args(rate=1_000_000, burst=1_000_000, max_concurrency=1000)) as service:
        bs = broker.bootstrap_servers
        runs = {"pass_through_fnapi": None, "enrich_fnapi": None}
        if args.flink:
            runs["enrich_flink"] = None
        for name in runs:
            for suffix in ("in", "out", "dlq"):
                create_topic(bs, f"{name}-{suffix}", partitions=4)
            produce_events(bs, f"{name}-in", count=args.events, seed=1, keep_ids=False)
        job = lambda name: [f"--bootstrap_servers={bs}", f"--input_topic={name}-in",  # noqa: E731
                            f"--output_topic={name}-out", f"--dlq_topic={name}-dlq", f"--group_id=g-{name}",
                            f"--scoring_url={service.url}", f"--batch_size={args.batch_size}",
                            "--max_in_flight=32", "--initial_rate=10000", "--progress_interval=0"]
        runs["pass_through_fnapi"] = timed([sys.executable, "-c", PASS_THROUGH, bs, "pass_through_fnapi-in",
                                            "pass_through_fnapi-out", "g-pass", FNAPI])
        runs["enrich_fnapi"] = timed([sys.executable, "-m", "pipelines.enrich_payments", FNAPI,
                                      *job("enrich_fnapi")])
        if args.flink:
            runs["enrich_flink"] = timed([sys.executable, "-m", "pipelines.enrich_payments", "--runner=FlinkRunner",
                                          f"--flink_job_server_jar={build_flink_jar()}", "--flink_master=[local]",
                                          "--flink_version=1.19", "--environment_type=LOOPBACK",
                                          "--parallelism=1", *job("enrich_flink")])
        for figures in runs.values():
            figures["events_per_s"] = args.events / figures["wall_s"]
        ratio = runs["enrich_fnapi"]["events_per_s"] / runs["pass_through_fnapi"]["events_per_s"]
        print(json.dumps({"events": args.events, "batch_size": args.batch_size, "runs": runs,
                          "enrich_over_pass_through": round(ratio, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
