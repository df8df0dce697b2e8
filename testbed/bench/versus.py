"""This checkout's enrichment drain against another checkout's, in one run: events per CPU-second.

    python -m testbed.bench.versus --base /path/to/other/checkout [--rounds 8] [--events 200000]
        [--base_args "--scoring_url={url}"] [--args "--service_url={url}/score"]

The other checkout needs its own `.venv` (`make venv` there). Both drain the
same-sized backlog from one broker against one fast scoring service (it never
limits), in alternating rounds so that a machine that slows down slows both;
each drain runs in its own process (cwd = its checkout) over its own copy of
the backlog, with the overhead bench's job options (`JOB_OPTIONS`). `{url}` in the args is the service's base URL. Reports each
side's median events per CPU-second of the process tree and steady events/s,
and this checkout's ÷ the base's (of the medians, and the median of each round's
ratio: a round's two drains ran back to back, so the machine's drift cancels).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

from testbed.bench import overhead
from testbed.kafka.admin import create_topic
from testbed.kafka.broker import KafkaBroker
from testbed.kafka.produce import produce_events
from testbed.scoring.process import ScoringServiceProcess, service_args

REPO = Path(__file__).resolve().parents[2]
# The overhead bench's drain (overhead.Bench.job_args): the rate starts high, one pipeline run.
JOB_OPTIONS = ("--max_in_flight=32", "--initial_rate=10000", "--drain_chunk=0")


def backlog(bootstrap: str, events: int) -> str:
    base = f"vs-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, f"{base}-in", 4)
    for suffix in ("out", "dlq"):
        create_topic(bootstrap, f"{base}-{suffix}", 4)
    produce_events(bootstrap, f"{base}-in", count=events, seed=1, keep_ids=False)
    return base


def drain(checkout: Path, base: str, bootstrap: str, url: str, batch_size: int, extra: list[str],
          job: str = "pipelines.enrich_payments") -> dict:
    cmd = [str(checkout / ".venv" / "bin" / "python"), "-m", job, overhead.FNAPI,
           f"--bootstrap_servers={bootstrap}", f"--input_topic={base}-in", f"--output_topic={base}-out",
           f"--dlq_topic={base}-dlq", f"--group_id=g-{base}", f"--batch_size={batch_size}", "--progress_interval=0",
           *JOB_OPTIONS, *[a.format(url=url) for a in extra]]
    return overhead.measured(cmd, bootstrap, [f"{base}-out", f"{base}-dlq"], cwd=checkout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (with its own .venv)")
    parser.add_argument("--this", type=Path, default=REPO, help="this side's checkout (default: this one)")
    parser.add_argument("--base_args", default="--scoring_url={url}", help="extra job flags of the base")
    parser.add_argument("--args", default="--service_url={url}/score", help="extra job flags of this checkout")
    parser.add_argument("--job", default="pipelines.enrich_payments",
                        help="the module both sides run, e.g. testbed.bench.instant_scoring (a stage of the job)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--out", default=None, help="JSON results (default bench-results/versus-<time>.json)")
    args = parser.parse_args(argv)
    sides = {"this": (args.this.resolve(), shlex.split(args.args)), "base": (args.base.resolve(), shlex.split(args.base_args))}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="versus-kafka-") as workdir, KafkaBroker(Path(workdir)) as broker, \
            ScoringServiceProcess(service_args(rate=1_000_000, burst=1_000_000, max_concurrency=1000)) as service:
        for round_ in range(args.rounds):
            # Both backlogs first, then the two drains back to back, in alternating order.
            backlogs = {name: backlog(broker.bootstrap_servers, args.events) for name in sides}
            order = ("this", "base") if round_ % 2 == 0 else ("base", "this")
            for name in order:
                checkout, extra = sides[name]
                runs[name].append(drain(checkout, backlogs[name], broker.bootstrap_servers, service.url,
                                        args.batch_size, extra, args.job))
                print(f"round {round_ + 1} {name}: {runs[name][-1]['events_per_cpu_s']} ev/CPU-s, "
                      f"{runs[name][-1]['steady_events_per_s']} ev/s steady", flush=True)
    summary = {name: {key: statistics.median(r[key] for r in rs) for key in ("events_per_cpu_s", "steady_events_per_s")}
               for name, rs in runs.items()}
    paired = [t["events_per_cpu_s"] / b["events_per_cpu_s"] for t, b in zip(runs["this"], runs["base"])]
    report = {"events": args.events, "batch_size": args.batch_size, "rounds": args.rounds, "base": str(sides["base"][0]),
              "runs": runs, "median": summary,
              "median_of_round_ratios_events_per_cpu_s": round(statistics.median(paired), 3),
              "this_over_base_events_per_cpu_s": round(summary["this"]["events_per_cpu_s"]
                                                      / summary["base"]["events_per_cpu_s"], 3),
              "this_over_base_steady": round(summary["this"]["steady_events_per_s"]
                                             / summary["base"]["steady_events_per_s"], 3)}
    out = Path(args.out or REPO / "bench-results" / f"versus-{datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for name, med in summary.items():
        print(f"{name}: median {med['events_per_cpu_s']:.0f} ev/CPU-s, {med['steady_events_per_s']:.0f} ev/s steady")
    print(f"this / base: {report['this_over_base_events_per_cpu_s']} per CPU-second "
          f"(median of the rounds' ratios {report['median_of_round_ratios_events_per_cpu_s']}), "
          f"{report['this_over_base_steady']} steady (JSON: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
