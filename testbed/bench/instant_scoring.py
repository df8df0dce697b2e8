"""The enrichment job with a stand-in for the service's HTTP round trip.

    python -m testbed.bench.instant_scoring [--stand_in=instant|no_http] <the job's options>

Everything else is the job's own code: reader, parser, the batching DoFn,
result encoding, writer and committer. The overhead benchmark (`--stages`)
drains with both stand-ins to tell the costs apart:
- `instant`: a runtime that answers every batch at once on the bundle thread (no
  event loop, no throttle, no HTTP): what the Beam steps around enrichment cost;
- `no_http`: the real `EnrichmentRuntime` - event loop thread, throttle, in-flight
  slots, futures - whose caller encodes the request like the real one and answers
  after the scoring service's default latency (20 ms + 0.2 ms per event) without a
  request: what the runtime's machinery costs apart from the HTTP client.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from pipelines.enrich_payments import default_enrichment, prepare, run
from testbed.scoring.config import Settings
from transforms.contract.loader import Contract
from transforms.control.settings import ThrottleSettings
from transforms.control.signals import AttemptResult, succeeded
from transforms.control.throttle import CallOutcome
from transforms.enrichment.caller import Caller
from transforms.enrichment.runtime import BatchResult, EnrichmentRuntime, RuntimeFactory, shared_runtime
from transforms.enrichment.transform import ThrottledEnrichment
from transforms.events import ParsedEvent

_RESULT = (0.5, "approve", "instant")


class InstantRuntime:
    def submit(self, batch: list[ParsedEvent], shard: int) -> Future[BatchResult]:
        outcome = CallOutcome(ok=True, attempts=1, reasons=["ok"], latencies_s=[0.0], value=[_RESULT] * len(batch))
        future: Future[BatchResult] = Future()
        future.set_result(BatchResult(list(batch), outcome, 0.0))
        return future

    def account(self, result: BatchResult) -> None:
        pass

    def gauges(self) -> dict[str, float]:
        return {"rate_limit_rps": 0.0, "in_flight": 0, "in_flight_limit": 0}

    def take_throttled_ms(self) -> int:
        return 0


class _LatencyOnlyCaller:
    """Encodes the request like the real caller, then answers like the default scoring service,
    after its latency, without a request."""

    def __init__(self, contract: Contract) -> None:
        self._contract = contract
        defaults = Settings()
        self._base_s, self._per_event_s = defaults.latency_ms / 1000, defaults.per_item_ms / 1000

    async def open(self) -> None:
        self._codec = self._contract.codec()

    async def call(self, batch: Sequence[ParsedEvent]) -> AttemptResult:
        events = [p.event for p in batch]
        self._codec.encode_request(events)
        self._codec.idempotency_key(events)
        await asyncio.sleep(self._base_s + self._per_event_s * len(batch))
        return succeeded([_RESULT] * len(batch))

    async def close(self) -> None:
        pass


def instant_runtime(settings: ThrottleSettings, caller: Caller[Any], key: str) -> InstantRuntime:
    return InstantRuntime()


def no_http_runtime(settings: ThrottleSettings, caller: Caller[Any], key: str) -> EnrichmentRuntime:
    return shared_runtime(settings, _LatencyOnlyCaller(caller.contract), key)   # type: ignore[attr-defined]


STAND_INS: dict[str, RuntimeFactory] = {"instant": instant_runtime, "no_http": no_http_runtime}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--stand_in", choices=sorted(STAND_INS), default="instant")
    ours, argv = parser.parse_known_args(argv)
    job = prepare(argv)
    real: ThrottledEnrichment = default_enrichment(job.opts, job.contract)
    run(argv, enrich=real.with_runtime_factory(STAND_INS[ours.stand_in]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
