"""Where the enrichment drain's CPU goes: py-spy samples one drain (FnApiRunner, batch 100, a
fast scoring service that never limits) and writes a flame graph and a table of self time.

    python -m testbed.bench.profile [--events 100000] [--out docs/profile] [--name after]

Writes `<name>.svg` (flame graph: open it in a browser, click to zoom) and `<name>.txt`:
self-time samples per layer (our code, Beam's runner, Kafka client, HTTP client, JSON codec)
and the 25 functions with the most self time. Two drains over the same backlog run: one
sampled for the SVG, one for the raw stacks the table is computed from (py-spy writes one
format per run). Start-up (imports, pipeline construction) is in the samples; it is small
against a 100,000-event drain and shows up as its own tower.
"""
from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.bench.overhead import FNAPI, REPO, Bench
from testbed.kafka.broker import KafkaBroker
from testbed.scoring.process import ScoringServiceProcess, service_args

PY_SPY = Path(sys.executable).with_name("py-spy")

# (layer, substrings of a frame's file) in the order they are tried against the leaf frame.
LAYERS = (
    ("ours: transforms/", ("transforms/",)),
    ("ours: pipelines/", ("pipelines/",)),
    ("JSON / msgspec", ("json/", "msgspec")),
    ("Kafka client", ("confluent_kafka",)),
    ("HTTP client", ("aiohttp/", "yarl/", "multidict/", "requests/", "urllib3/", "http/client", "socket.py")),
    ("Beam coders", ("apache_beam/coders",)),
    ("Beam runner and SDK harness", ("apache_beam/",)),
    ("threads, queues, futures", ("threading.py", "queue.py", "concurrent/", "asyncio/")),
    ("imports (start-up)", ("<frozen importlib",)),
)


def _layer(frame: str) -> str:
    for name, needles in LAYERS:
        if any(n in frame for n in needles):
            return name
    return "other (native frames, stdlib)"


def summarise(raw: str, top: int = 25) -> str:
    """A table of self-time samples from py-spy's raw (collapsed stack) output."""
    layers: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = re.sub(r":\d+\)$", ")", stack.rsplit(";", 1)[-1])  # per function, not per line
        layers[_layer(leaf)] += int(count)
        functions[leaf] += int(count)
        total += int(count)
    if not total:
        return "no samples"
    lines = [f"{total} samples of the thread holding the GIL (self time of the leaf frame)", "", f"{'layer':32s} {'share':>6s}"]
    lines += [f"{name:32s} {n / total:6.1%}" for name, n in layers.most_common()]
    lines += ["", f"top {top} functions by self time"]
    lines += [f"{n / total:6.1%}  {name}" for name, n in functions.most_common(top)]
    return "\n".join(lines)


def _record(bench: Bench, events: int, fmt: str, out: Path) -> None:
    base = bench.topics("profile", events, 4)
    job = [FNAPI, *bench.job_args(base)]
    # --gil: only the thread holding the GIL is sampled, so threads waiting on a queue,
    # a socket or a condition do not count as busy.
    subprocess.run([str(PY_SPY), "record", "--gil", "--rate", "200", "--format", fmt, "--output", str(out), "--",
                    sys.executable, "-m", "pipelines.enrich_payments", *job],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", default=str(REPO / "docs" / "profile"))
    parser.add_argument("--name", default="enrich", help="file name stem of the SVG and the table")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker(Path(tmp) / "kafka", stop_with_parent=True) as broker, \
            ScoringServiceProcess(service_args(rate=1_000_000, burst=1_000_000, max_concurrency=1000)) as service:
        bench = Bench(broker.bootstrap_servers, service.url, batch_size=100)
        _record(bench, args.events, "flamegraph", out / f"{args.name}.svg")
        raw = Path(tmp) / "raw.txt"
        _record(bench, args.events, "raw", raw)
        table = summarise(raw.read_text())
    (out / f"{args.name}.txt").write_text(f"{args.events} events, batch 100, FnApiRunner\n{table}\n")
    print(table)
    print(f"(flame graph: {out / args.name}.svg)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
