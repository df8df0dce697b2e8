"""The enrichment job with a stand-in for the scoring service's HTTP round trip.

    python -m testbed.bench.instant_scoring [--stand_in=instant|no_http] <the job's options>

Everything else is the job's own code: reader, parser, the batching DoFn,
result encoding, writer and committer. The overhead benchmark (`--stages`)
drains with both stand-ins to tell the costs apart:
- `instant`: a runtime that answers every batch at once on the bundle thread (no
  event loop, no throttle, no HTTP): what the Beam steps around scoring cost;
- `no_http`: the real `ScoringRuntime` - event loop thread, throttle, in-flight
  slots, futures, request encoding - whose client answers after the scoring
  service's default latency (20 ms + 0.2 ms per event) without a request: what the
  runtime's machinery costs apart from the HTTP client.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Sequence
from concurrent.futures import Future

from pipelines.enrich_payments import prepare, run, scoring_config
from testbed.scoring.config import Settings
from transforms.control.batching import BatchPolicy
from transforms.control.signals import AttemptKind, AttemptResult
from transforms.control.throttle import CallOutcome
from transforms.events import ParsedEvent
from transforms.scoring.codec import Verdict
from transforms.scoring.runtime import BatchResult, RuntimeFactory, ScoringConfig, ScoringRuntime, shared_runtime
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


class _LatencyOnlyClient:
    """Answers like the default scoring service, after its latency, without a request."""

    def __init__(self) -> None:
        defaults = Settings()
        self._base_s, self._per_event_s = defaults.latency_ms / 1000, defaults.per_item_ms / 1000

    async def attempt(self, body: bytes, txn_ids: Sequence[str], idempotency_key: str) -> AttemptResult:
        await asyncio.sleep(self._base_s + self._per_event_s * len(txn_ids))
        return AttemptResult(AttemptKind.SUCCESS, "ok", status=200, value=[_VERDICT] * len(txn_ids))

    async def close(self) -> None:
        pass


class NoHttpRuntime(ScoringRuntime):
    async def _make_client(self, token: str | None) -> _LatencyOnlyClient:   # type: ignore[override]
        return _LatencyOnlyClient()


def instant_runtime(config: ScoringConfig) -> InstantRuntime:
    return InstantRuntime()


STAND_INS: dict[str, RuntimeFactory] = {"instant": instant_runtime,
                                        "no_http": functools.partial(shared_runtime, runtime_class=NoHttpRuntime)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--stand_in", choices=sorted(STAND_INS), default="instant")
    ours, argv = parser.parse_known_args(argv)
    _, opts, _ = prepare(argv)
    score = ScoreInBatches(scoring_config(opts), BatchPolicy(opts.batch_size, opts.max_batch_bytes), opts.num_shards,
                           runtime_factory=STAND_INS[ours.stand_in])
    run(argv, score=score)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
