"""`make demo`: the seed's scenario on one machine, end to end, then everything stopped.

Starts a local Kafka broker and the scoring service (333 req/s = 20,000/min),
produces payment events at 100,000/min for `--seconds` while the enrichment
job drains them on the DirectRunner, round after round, so the lag grows
while the service is the bottleneck and drains once intake stops. Prints each
round's summary and the final state of the topics and the consumer group.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipelines.enrich_payments import run
from testbed.kafka.admin import committed_offsets, create_topic, end_offsets
from testbed.kafka.broker import KafkaBroker
from testbed.kafka.produce import ProduceSummary, produce_events
from testbed.scoring.process import ScoringServiceProcess, service_args

GROUP = "payment-enrichment-demo"
TOPICS = {"in": "payments", "out": "payments-scored", "dlq": "payments-dlq"}


def lag(bootstrap: str) -> int:
    ends = end_offsets(bootstrap, TOPICS["in"])
    committed = committed_offsets(bootstrap, GROUP, TOPICS["in"])
    return sum(end - (committed.get(p) or 0) for p, end in ends.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="How long to produce at the intake rate.")
    parser.add_argument("--intake_per_min", type=float, default=100_000, help="Intake rate (events/min).")
    parser.add_argument("--capacity_rps", type=float, default=333, help="Scoring service rate limit (req/s).")
    parser.add_argument("--batch_size", type=int, default=4, help="Events per scoring request.")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="demo-", dir=Path(".cache/run").resolve()
                                    if Path(".cache").exists() else None))
    broker = KafkaBroker(workdir / "kafka", stop_with_parent=True)
    service = ScoringServiceProcess(service_args(rate=args.capacity_rps), log_dir=workdir)
    try:
        print("starting Kafka ... ", end="", flush=True)
        print(f"up on {broker.bootstrap_servers} in {broker.start():.1f} s")
        service.start()
        print(f"scoring service on {service.url}, capacity {args.capacity_rps:.0f} req/s "
              f"x {args.batch_size} events/request = {args.capacity_rps * args.batch_size:.0f} events/s")
        bs = broker.bootstrap_servers
        create_topic(bs, TOPICS["in"], partitions=8)
        create_topic(bs, TOPICS["out"], partitions=4)
        create_topic(bs, TOPICS["dlq"], partitions=1)

        produced: list[ProduceSummary] = []
        producer = threading.Thread(target=lambda: produced.append(produce_events(
            bs, TOPICS["in"], rate_per_s=args.intake_per_min / 60, duration_s=args.seconds,
            malformed_fraction=0.01, seed=1, keep_ids=False)), daemon=True)
        producer.start()
        print(f"producing {args.intake_per_min:,.0f} events/min for {args.seconds:.0f} s (1 % malformed)")
        job = [f"--bootstrap_servers={bs}", f"--input_topic={TOPICS['in']}", f"--output_topic={TOPICS['out']}",
               f"--dlq_topic={TOPICS['dlq']}", f"--group_id={GROUP}", f"--service_url={service.url}/score",
               f"--batch_size={args.batch_size}", "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"]
        started, rounds = time.monotonic(), 0
        time.sleep(2)
        while producer.is_alive() or lag(bs) > 0:
            rounds += 1
            print(f"\n--- drain round {rounds}: lag before = {lag(bs):,} events "
                  f"(t = {time.monotonic() - started:.0f} s)")
            run(job)
        producer.join()
        summary = produced[0]
        stats = service.stats()
        print(f"\ndone in {time.monotonic() - started:.0f} s and {rounds} drain rounds: "
              f"{summary.delivered:,} events produced ({summary.malformed:,} malformed), "
              f"final lag {lag(bs)}, service accepted {stats['accepted_items']:,} events in "
              f"{stats['accepted_requests']:,} requests, rejected {sum(stats['rejected'].values()):,}, "
              f"peak concurrency {stats['peak_concurrency']}")
        return 0
    finally:
        service.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
