"""How close a drain runs to a rate limiter this project did not write: nginx `limit_req`,
answering plain 429s without `Retry-After` or `RateLimit` headers, in front of the service.

    python -m testbed.bench.foreign_limiter [--events 10000] [--rate 200] [--batch_size 2]
                                            [--max_in_flight 8]

Share of the limit = requests nginx let through ÷ (rate × the drain's wall time, pipeline
start-up included): 1.0 would be a client that is at the limit from its first second to
its last. The seed's new-user case is 10,000 events at batch 2 through 200 r/s.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from testbed.bench.overhead import FNAPI
from testbed.kafka.admin import create_topic
from testbed.kafka.broker import KafkaBroker
from testbed.kafka.produce import produce_events
from testbed.limiters.nginx import NginxLimiter
from testbed.scoring.process import ScoringServiceProcess, service_args


def main(argv: list[str] | None = None) -> int:
    from pipelines.enrich_payments import run
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=200.0, help="nginx limit_req rate (requests/s)")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--max_in_flight", type=int, default=8)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker(Path(tmp) / "kafka", stop_with_parent=True) as broker, \
            ScoringServiceProcess(service_args(rate=1_000_000, no_ratelimit_headers=True)) as service, \
            NginxLimiter(service.url, args.rate, burst=10) as nginx:
        bs = broker.bootstrap_servers
        for topic, partitions in (("in", 4), ("out", 2), ("dlq", 1)):
            create_topic(bs, topic, partitions)
        produce_events(bs, "in", count=args.events, seed=3, keep_ids=False)
        started = time.monotonic()
        summary = run([FNAPI, f"--bootstrap_servers={bs}", "--input_topic=in", "--output_topic=out",
                       "--dlq_topic=dlq", "--group_id=g", f"--service_url={nginx.url}/score",
                       f"--batch_size={args.batch_size}", f"--max_in_flight={args.max_in_flight}",
                       "--progress_interval=0"])
        wall = time.monotonic() - started
        accepted = service.stats()["accepted_requests"]
    rejected = summary.counter("requests", outcome="429")
    print(f"{args.events:,} events at batch {args.batch_size} through nginx {args.rate:g} r/s: "
          f"{wall:.1f} s, {accepted:,} requests through, {rejected:,} plain 429s, "
          f"{summary.attempts / summary.counter('batches'):.3f} attempts per batch")
    print(f"share of the limit over the job: {accepted / (args.rate * wall):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
