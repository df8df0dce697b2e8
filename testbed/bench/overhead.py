"""What the enrichment costs on top of moving the records: the enrichment drain's events/s ÷ a
pass-through Kafka→Kafka drain (same reader, writer and committer), on the same runner, in the
same run, against a fast scoring service that never limits.

    python -m testbed.bench.overhead [--events 200000] [--batch_size 100] [--flink] [--stages]
                                     [--partitions 8,32,128] [--out overhead.json]

Each drain runs in its own process over its own copy of the backlog (the pass-through's as the
job's command runs its own: `pipelines.command.exit_with`). Figures per run:
wall time, CPU time of the process tree and events per CPU-second (start-up included),
seconds to the first output, peak RSS (the launcher's, and its children's: the JVMs on
Flink) and threads, and the *steady* events/s - outputs ÷ the span between the first and
the last output's Kafka timestamp, which leaves process and pipeline start-up out. The
ratio the README quotes is steady enrichment ÷ steady pass-through; the whole-process
ratio of a 30,000-event drain is run beside it. `--flink` adds the enrichment drain on
Flink embedded at parallelism 1 and 2, and both Kafka backends (`--kafka_io=python|java`)
on Flink over `--kafka_io_events`; `--partitions` the enrichment drain over topics of that
many partitions. `--stages` adds three drains between the two ends - the pass-through with
the parse step, and the enrichment job with a scoring runtime that answers at once and with
the real runtime whose client answers after the service's latency without HTTP
(`testbed.bench.instant_scoring`) - so the difference between neighbours is the cost of
parsing, of the Beam steps around scoring (batching, result encoding), of the runtime's
machinery (event loop thread, throttle, futures) and of the HTTP client.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil

from testbed.flink.jobserver import FLINK_MINOR
from testbed.flink.jobserver import build as build_flink_jar
from testbed.kafka.admin import consume_all, create_topic
from testbed.kafka.broker import KafkaBroker
from testbed.kafka.expansion import build as build_kafka_jars
from testbed.kafka.produce import produce_events
from testbed.scoring.process import ScoringServiceProcess, service_args

FNAPI = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"
REPO = Path(__file__).resolve().parents[2]
WHOLE_PROCESS_EVENTS = 30_000

PASS_THROUGH = """
import gc; gc.disable()   # paused while the modules load, as the job's command pauses it (pipelines.command)
import sys, apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from transforms.kafka.connection import KafkaConnection
from transforms.kafka.read import ReadFromKafka
from transforms.kafka.write import WriteToKafka
from transforms.kafka.commit import CommitOffsets
from transforms.kafka.records import OffsetGap, OutboundRecord
from transforms.contract.loader import DEFAULT_CONTRACT, load_contract
from transforms.events import DeadLetter, ParsedEvent, ParseEvents, SkippedOffsets
from pipelines.command import exit_with
bootstrap, source, sink, group, parse = sys.argv[1:6]

def raw(r):
    if isinstance(r, (OffsetGap, SkippedOffsets)):
        return r if isinstance(r, OffsetGap) else r.gap
    if isinstance(r, ParsedEvent):
        return OutboundRecord(sink, r.event.id.encode(), r.raw, r.source)
    if isinstance(r, DeadLetter):
        return OutboundRecord(sink, None, r.payload or b"", r.source)
    return OutboundRecord(sink, r.key, r.value or b"", r.position)

def main():
    conn = KafkaConnection(bootstrap, group_id=group)
    with beam.Pipeline(options=PipelineOptions(sys.argv[6:])) as p:
        records = p | ReadFromKafka(conn, source, bounded=True)
        if parse == "parse":
            records = records | ParseEvents(load_contract(DEFAULT_CONTRACT).schema)
        records | beam.Map(lambda batch: [raw(r) for r in batch]) | WriteToKafka(conn) | CommitOffsets(conn)
    return 0

exit_with(main)   # the process as the job's command runs it
"""


def _tree(ps: psutil.Process) -> list[psutil.Process]:
    """The launcher and its live children (Flink's job server JVM is one)."""
    return [ps, *ps.children(recursive=True)]


def measured(cmd: list[str], bootstrap: str, outputs: list[str], cwd: Path = REPO) -> dict[str, float]:
    """Runs a drain process to its end: wall, CPU, peak RSS and threads, and steady events/s.

    RSS and threads are the launcher's (where the Python SDK harness runs with
    LOOPBACK); `peak_children_rss_mb` is the sum over its child processes (the
    JVMs on Flink); CPU counts the whole tree.
    """
    started, started_at = time.monotonic(), time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak_rss = peak_children = peak_threads = 0
    cpu_s = 0.0  # the last reading before the process ended (at most one poll short)
    while proc.poll() is None:
        try:
            peak_rss = max(peak_rss, ps.memory_info().rss)
            peak_threads = max(peak_threads, ps.num_threads())
            tree, children_rss = _tree(ps), 0
            cpu_s = 0.0
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    cpu_s += t.user + t.system
                    children_rss += p.memory_info().rss if p is not ps else 0
            peak_children = max(peak_children, children_rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {proc.stderr.read()[-2000:]}")
    times = sorted(r.timestamp for topic in outputs for r in consume_all(bootstrap, topic, timeout=300))
    steady = (len(times) - 1) / ((times[-1] - times[0]) / 1000) if len(times) > 1 and times[-1] > times[0] else None
    return {"wall_s": round(wall, 2), "outputs": len(times), "steady_events_per_s": steady and round(steady),
            "whole_process_events_per_s": round(len(times) / wall),
            "first_output_s": round(times[0] / 1000 - started_at, 1) if times else None,
            "cpu_s": round(cpu_s, 2), "events_per_cpu_s": round(len(times) / cpu_s) if cpu_s else None,
            "peak_rss_mb": round(peak_rss / 2**20, 1), "peak_children_rss_mb": round(peak_children / 2**20, 1),
            "peak_threads": peak_threads}


class Bench:
    def __init__(self, bootstrap: str, scoring_url: str, batch_size: int) -> None:
        self.bootstrap, self.url, self.batch_size = bootstrap, scoring_url, batch_size
        self._n = 0

    def topics(self, name: str, events: int, partitions: int) -> str:
        self._n += 1
        base = f"{name}-{self._n}"
        create_topic(self.bootstrap, f"{base}-in", partitions)
        for suffix in ("out", "dlq"):
            create_topic(self.bootstrap, f"{base}-{suffix}", 4)
        produce_events(self.bootstrap, f"{base}-in", count=events, seed=1, keep_ids=False)
        return base

    def pass_through(self, events: int, partitions: int = 4, parse: bool = False) -> dict[str, float]:
        """Kafka -> Kafka, the records as they are (`parse`: through the parse step first)."""
        base = self.topics("pass", events, partitions)
        return measured([sys.executable, "-c", PASS_THROUGH, self.bootstrap, f"{base}-in", f"{base}-out",
                         f"g-{base}", "parse" if parse else "raw", FNAPI], self.bootstrap, [f"{base}-out"])

    def job_args(self, base: str) -> list[str]:
        """The enrichment drain's options over the topics `topics` made for `base`."""
        return [f"--bootstrap_servers={self.bootstrap}", f"--input_topic={base}-in", f"--output_topic={base}-out",
                f"--dlq_topic={base}-dlq", f"--group_id=g-{base}", f"--service_url={self.url}/score",
                f"--batch_size={self.batch_size}", "--max_in_flight=32", "--initial_rate=10000",
                "--progress_interval=0", "--drain_chunk=0"]

    def enrich(self, events: int, partitions: int = 4, runner: list[str] | None = None,
               job: str = "pipelines.enrich_payments", extra: list[str] | None = None) -> dict[str, float]:
        base = self.topics("enrich", events, partitions)
        return measured([sys.executable, "-m", job, *(runner or [FNAPI]), *self.job_args(base), *(extra or [])],
                        self.bootstrap, [f"{base}-out", f"{base}-dlq"])


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run(args: argparse.Namespace) -> dict:
    report: dict = {"events": args.events, "batch_size": args.batch_size, "cpus": os.cpu_count(),
                    "started": datetime.now().isoformat(timespec="seconds"), "runs": {}}
    runs = report["runs"]
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker(Path(tmp) / "kafka", stop_with_parent=True) as broker, \
            ScoringServiceProcess(service_args(rate=1_000_000, burst=1_000_000, max_concurrency=1000)) as service:
        bench = Bench(broker.bootstrap_servers, service.url, args.batch_size)
        runs["pass_through_fnapi"] = bench.pass_through(args.events)
        runs["enrich_fnapi"] = bench.enrich(args.events)
        if args.stages:
            runs["parse_only_fnapi"] = bench.pass_through(args.events, parse=True)
            runs["enrich_instant_scoring_fnapi"] = bench.enrich(args.events, job="testbed.bench.instant_scoring")
            runs["enrich_no_http_fnapi"] = bench.enrich(args.events, job="testbed.bench.instant_scoring",
                                                        extra=["--stand_in=no_http"])
        runs[f"pass_through_fnapi_{WHOLE_PROCESS_EVENTS}"] = bench.pass_through(WHOLE_PROCESS_EVENTS)
        runs[f"enrich_fnapi_{WHOLE_PROCESS_EVENTS}"] = bench.enrich(WHOLE_PROCESS_EVENTS)
        for partitions in args.partitions:
            runs[f"enrich_fnapi_{partitions}_partitions"] = bench.enrich(args.events, partitions)
        if args.flink:
            flink = ["--runner=FlinkRunner", "--flink_master=[local]", f"--flink_version={FLINK_MINOR}",
                     "--environment_type=LOOPBACK"]
            jar = build_flink_jar()
            for parallelism in (1, 2):
                runs[f"enrich_flink_p{parallelism}"] = bench.enrich(
                    args.events, runner=[*flink, f"--flink_job_server_jar={jar}", f"--parallelism={parallelism}"])
            # Both Kafka backends over the same small backlog: a KafkaIO drain runs in chunks of
            # < 10,000 records, each a Flink job of its own, so a large one measures start-ups.
            jars = build_kafka_jars()
            for kafka_io, server in (("python", str(jar)), ("java", str(jars.job_server))):
                runs[f"enrich_flink_p1_kafka_io_{kafka_io}"] = bench.enrich(args.kafka_io_events, runner=[
                    *flink, f"--flink_job_server_jar={server}", "--parallelism=1", f"--kafka_io={kafka_io}",
                    f"--kafka_expansion_service={jars.expansion_service}"])
    report["enrich_over_pass_through_steady"] = _ratio(runs["enrich_fnapi"]["steady_events_per_s"],
                                                       runs["pass_through_fnapi"]["steady_events_per_s"])
    if args.stages:
        report["steady_us_per_event"] = {
            name: round(1e6 / runs[run]["steady_events_per_s"], 1) if runs[run]["steady_events_per_s"] else None
            for name, run in (("pass_through", "pass_through_fnapi"), ("parse_only", "parse_only_fnapi"),
                              ("instant_scoring", "enrich_instant_scoring_fnapi"), ("no_http", "enrich_no_http_fnapi"),
                              ("enrichment", "enrich_fnapi"))}
    report[f"enrich_over_pass_through_whole_process_{WHOLE_PROCESS_EVENTS}"] = _ratio(
        runs[f"enrich_fnapi_{WHOLE_PROCESS_EVENTS}"]["whole_process_events_per_s"],
        runs[f"pass_through_fnapi_{WHOLE_PROCESS_EVENTS}"]["whole_process_events_per_s"])
    return report


def text(report: dict) -> str:
    lines = [f"{'run':38s} {'steady ev/s':>12s} {'whole ev/s':>11s} {'ev/CPU-s':>9s} {'1st out s':>9s} "
             f"{'wall s':>7s} {'RSS MB':>7s} {'JVMs MB':>8s} {'threads':>8s}"]
    for name, r in report["runs"].items():
        lines.append(f"{name:38s} {r['steady_events_per_s'] or '-':>12} {r['whole_process_events_per_s']:>11} "
                     f"{r['events_per_cpu_s'] or '-':>9} {r['first_output_s'] or '-':>9} {r['wall_s']:>7} "
                     f"{r['peak_rss_mb']:>7} {r['peak_children_rss_mb']:>8} {r['peak_threads']:>8}")
    lines.append(f"enrichment / pass-through, steady ({report['events']:,} events): "
                 f"{report['enrich_over_pass_through_steady']}")
    key = f"enrich_over_pass_through_whole_process_{WHOLE_PROCESS_EVENTS}"
    lines.append(f"enrichment / pass-through, whole process ({WHOLE_PROCESS_EVENTS:,} events): {report[key]}")
    if "steady_us_per_event" in report:
        lines.append("steady us per event: " + ", ".join(f"{k} {v}" for k, v in report["steady_us_per_event"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--flink", action="store_true", help="also drain on Flink [local] at parallelism 1 and 2, "
                        "and with each Kafka backend (--kafka_io=python|java)")
    parser.add_argument("--stages", action="store_true", help="also drain with the parse step only, with a scoring "
                        "runtime that answers at once, and with the real runtime minus HTTP (what parsing, the Beam "
                        "steps, the runtime and HTTP each cost)")
    parser.add_argument("--kafka_io_events", type=int, default=9_000, help="events of the Kafka backend comparison")
    parser.add_argument("--partitions", type=lambda s: [int(x) for x in s.split(",") if x], default=[],
                        help="also drain topics of these partition counts, e.g. 8,32,128")
    parser.add_argument("--out", default=None, help="JSON results (default bench-results/overhead-<time>.json)")
    args = parser.parse_args(argv)
    report = run(args)
    out = Path(args.out or REPO / "bench-results" / f"overhead-{datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(text(report))
    print(f"(JSON: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
