"""Is the consumer group keeping up? Answered from Kafka alone, per partition.

    python -m pipelines.status --bootstrap_servers 127.0.0.1:9092 --group_id payment-enrichment \
        --input_topic payments [--interval 5]

The options that name the job are the job's own (`--bootstrap_servers`, `--group_id`,
`--input_topic`, `--kafka_property`), with the job's defaults.

Takes two samples `--interval` seconds apart (committed offsets, end offsets,
timestamp of the record at the committed offset = the oldest unprocessed
event) and prints per partition the lag, that event's age, the drain rate
and a verdict:

  draining   lag falling                  - wait (ETA shown)
  holding    lag flat, commits advancing  - keeping pace with producers; more capacity drains it
  growing    lag rising, commits advancing - falling behind: scale out / raise the scoring capacity
  stalled    lag > 0, commits not moving  - nothing completes: is the job running? is scoring down?
  caught up  lag 0, new records arriving  - healthy
  idle       lag 0, nothing produced      - healthy, no traffic

Exit codes: 0 status printed (whatever the verdict), 2 bad arguments,
3 broker unreachable, 4 topic missing.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelines.command import exit_with
from pipelines.options import job_default
from transforms.kafka.connection import KafkaConnection, parse_properties
from transforms.kafka.lag import KafkaUnreachable, LagProbe, PartitionLag, TopicMissing

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NO_TOPIC = 0, 2, 3, 4

DRAINING, HOLDING, GROWING, STALLED, CAUGHT_UP, IDLE = (
    "draining", "holding", "growing", "stalled", "caught up", "idle")
_SEVERITY = (STALLED, GROWING, HOLDING, DRAINING, CAUGHT_UP, IDLE)  # worst first


@dataclass(frozen=True)
class PartitionStatus:
    partition: int
    committed: int | None
    end: int
    lag: int
    lag_change: int                 # second sample minus first
    drain_per_s: float              # committed offsets advanced per second
    oldest_age_s: float | None   # age of the oldest unprocessed event (None: unknown)
    verdict: str


def verdict(first: PartitionLag, second: PartitionLag) -> str:
    if second.lag == 0:
        return IDLE if second.end == first.end else CAUGHT_UP
    if second.position == first.position:
        return STALLED
    if second.lag < first.lag:
        return DRAINING
    return GROWING if second.lag > first.lag else HOLDING


def assess(first: Sequence[PartitionLag], second: Sequence[PartitionLag], interval_s: float,
           now_s: float) -> list[PartitionStatus]:
    before = {p.partition: p for p in first}
    out = []
    for p in second:
        b = before.get(p.partition, p)
        out.append(PartitionStatus(p.partition, p.committed, p.end, p.lag, p.lag - b.lag,
                                   (p.position - b.position) / interval_s, p.oldest_age_s(now_s), verdict(b, p)))
    return out


def overall(statuses: Sequence[PartitionStatus]) -> str:
    """The worst partition decides: one stalled partition blocks its share of the backlog forever."""
    return min((s.verdict for s in statuses), key=_SEVERITY.index, default=IDLE)


def sample_twice(probe: LagProbe, interval_s: float,
                 sleep: Callable[[float], None] = time.sleep) -> list[PartitionStatus]:
    first = probe.sample(with_age=False)
    sleep(interval_s)
    return assess(first, probe.sample(with_age=True), interval_s, time.time())


def render(topic: str, group: str, interval_s: float, statuses: Sequence[PartitionStatus]) -> str:
    rows = [f"{'partition':>9} {'committed':>10} {'end':>10} {'lag':>9} {'lag chg':>8} {'drain/s':>9} "
            f"{'oldest age':>11}  verdict"]
    for s in statuses:
        rows.append(f"{s.partition:>9} {'-' if s.committed is None else s.committed:>10} {s.end:>10} {s.lag:>9} "
                    f"{s.lag_change:>+8} {s.drain_per_s:>9.1f} {_age(s.oldest_age_s):>11}  {s.verdict}")
    total_lag = sum(s.lag for s in statuses)
    drain = -sum(s.lag_change for s in statuses) / interval_s
    eta = f", ETA {total_lag / drain:.0f} s" if total_lag and drain > 0 else ""
    rows.append(f"{topic} / group {group}: lag {total_lag}, lag falling {drain:.1f}/s over {interval_s:g} s{eta}"
                f" -> {overall(statuses)}")
    return "\n".join(rows)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.status", description=__doc__.split("\n")[0],
                                     epilog="exit codes: 0 printed, 2 bad arguments, 3 broker unreachable, "
                                            "4 topic missing")
    for name in ("bootstrap_servers", "group_id", "input_topic"):
        parser.add_argument(f"--{name}", default=job_default(name), help=f"the job's --{name} (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between the two samples")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    parser.add_argument("--kafka_property", action="append", default=[], metavar="KEY=VALUE",
                        help="extra librdkafka property (e.g. security.protocol=SSL), repeatable")
    args = parser.parse_args(argv)
    if args.interval <= 0 or args.timeout <= 0:
        parser.error("--interval and --timeout must be > 0")
    try:
        args.properties = parse_properties(args.kafka_property)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv: list[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    args = parse_args(argv)
    conn = KafkaConnection(args.bootstrap_servers, group_id=args.group_id, properties=args.properties)
    probe = LagProbe(conn, args.input_topic, timeout_s=args.timeout)
    try:
        statuses = sample_twice(probe, args.interval, sleep)
    except KafkaUnreachable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except TopicMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NO_TOPIC
    finally:
        probe.close()
    print(render(args.input_topic, args.group_id, args.interval, statuses))
    return EXIT_OK


if __name__ == "__main__":
    exit_with(main)
