"""The enrichment job with a scoring runtime that answers every batch at once, no HTTP.

    python -m testbed.bench.instant_scoring <the job's options>

Everything else is the job's own code: reader, parser, the batching DoFn,
result encoding, writer and committer. The overhead benchmark (`--stages`)
drains with it to tell the cost of the HTTP client and its event loop apart
from the cost of the Beam steps around them.
"""
from __future__ import annotations

import sys
from concurrent.futures import Future

from pipelines.enrich_payments import prepare, run, scoring_config
from transforms.control.batching import BatchPolicy
from transforms.control.throttle import CallOutcome
from transforms.events import ParsedEvent
from transforms.scoring.codec import Verdict
from transforms.scoring.runtime import BatchResult, ScoringConfig
from transforms.scoring.score_in_batches import ScoreInBatches

_VERDICT = Verdict(0.5, "approve", "instant")


class InstantRuntime:
    def submit(self, batch: list[ParsedEvent], shard: int) -> Future[BatchResult]:
        outcome = CallOutcome(ok=True, attempts=1, reasons=["ok"], latencies_s=[0.0], value=[_VERDICT] * len(batch))
        future: Future[BatchResult] = Future()
        future.set_result(BatchResult(list(batch), outcome, 0.0))
        return future

    def gauges(self) -> dict[str, float]:
        return {"rate_limit_rps": 0.0, "in_flight": 0, "in_flight_limit": 0}


def instant_runtime(config: ScoringConfig) -> InstantRuntime:
    return InstantRuntime()


def main(argv: list[str]) -> int:
    _, opts, _ = prepare(argv)
    score = ScoreInBatches(scoring_config(opts), BatchPolicy(opts.batch_size, opts.max_batch_bytes), opts.num_shards,
                           runtime_factory=instant_runtime)
    run(argv, score=score)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
