"""Enrich your own element type with `ThrottledEnrichment`: orders priced in euros by an FX-rate service.

    python examples/enrich_orders.py [--orders 2000] [--rate 100]

It starts a local FX-rate service that admits `--rate` requests/s (more get
429 with Retry-After), then runs a Beam pipeline on the FnApiRunner that
enriches `Order`s from `beam.Create` through it, and prints what came out.
The `FxRates` caller is all the service-specific code there is: one attempt
at one batch, said as an `AttemptResult`. Batching, the learned rate, the
in-flight cap, backoff, the retry budget, deadlines and dead letters come with
the transform.
"""
from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
import apache_beam as beam
from aiohttp import web

from transforms.enrichment import (
    DEFAULT_STATUS,
    AttemptResult,
    ElementFailure,
    Enriched,
    Failed,
    ThrottledEnrichment,
    ThrottleSettings,
    connection_refused,
    parse_retry_after,
    succeeded,
)

RATES = {"EUR": 1.0, "USD": 0.93, "GBP": 1.17, "CHF": 1.05}


@dataclass(frozen=True)
class Order:
    order_id: str
    account: str
    amount: float
    currency: str


class FxRates:
    """The `Caller`: POST the batch's currencies, get their rates (one attempt, never a retry)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> None:
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    async def call(self, batch: Sequence[Order]) -> AttemptResult:
        try:
            async with self.session.post(self.url, json={"currencies": [o.currency for o in batch]}) as resp:
                if resp.status != 200:   # 429/5xx: retried; 400/422: dead letters; 401/404: the job stops
                    return DEFAULT_STATUS.classify(resp.status, parse_retry_after(resp.headers.get("Retry-After")))
                rates = (await resp.json())["rates"]
        except aiohttp.ClientError as e:
            return connection_refused(str(e))
        return succeeded([round(o.amount * rates[o.currency], 2) if o.currency in rates
                          else ElementFailure("unknown_currency", f"no rate for {o.currency}") for o in batch])


def enrich_orders(orders: list[Order], url: str) -> list[Enriched | Failed]:
    """The pipeline: orders in, Enriched(order, amount_eur) or Failed(order, reason) out."""
    run = uuid.uuid4().hex
    with beam.Pipeline(runner="apache_beam.runners.portability.fn_api_runner.FnApiRunner") as p:
        (p
         | beam.Create(orders)
         | ThrottledEnrichment(FxRates(url), ThrottleSettings(batch_size=25, max_in_flight=16, num_shards=4),
                               shard_key=lambda o: o.account)
         | beam.ParDo(_Collect(run)))
    return _OUTCOMES.pop(run, [])


# The FnApiRunner runs the pipeline in this process; DoFns are copies, so they collect by run id.
_OUTCOMES: dict[str, list[Enriched | Failed]] = defaultdict(list)
_LOCK = threading.Lock()


class _Collect(beam.DoFn):
    def __init__(self, run: str) -> None:
        self._run = run

    def process(self, outcome: Enriched | Failed) -> tuple[()]:
        with _LOCK:
            _OUTCOMES[self._run].append(outcome)
        return ()


@contextmanager
def local_fx_service(rate_rps: float) -> Iterator[str]:
    """An FX-rate service admitting `rate_rps` requests/s (a token bucket; 429 + Retry-After beyond)."""
    tokens, last = rate_rps / 10, time.monotonic()

    async def rates(request: web.Request) -> web.Response:
        nonlocal tokens, last
        now = time.monotonic()
        tokens, last = min(rate_rps / 10, tokens + (now - last) * rate_rps), now
        if tokens < 1:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0.1"})
        tokens -= 1
        wanted = (await request.json())["currencies"]
        await asyncio.sleep(0.01)
        return web.json_response({"rates": {c: RATES[c] for c in wanted if c in RATES}})

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(web.Application())
    runner.app.router.add_post("/rates", rates)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/rates"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def sample_orders(n: int) -> list[Order]:
    currencies = [*RATES, "XYZ"]   # XYZ has no rate: those orders come out as Failed
    return [Order(f"o-{i}", f"acct-{i % 50}", 10.0 + i % 90, currencies[i % len(currencies)]) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s the FX service admits")
    args = parser.parse_args()
    with local_fx_service(args.rate) as url:
        started = time.monotonic()
        outcomes = enrich_orders(sample_orders(args.orders), url)
    enriched = [o for o in outcomes if isinstance(o, Enriched)]
    failed = [o for o in outcomes if isinstance(o, Failed)]
    print(f"{len(enriched)} orders priced, {len(failed)} failed ({', '.join(sorted({f.reason for f in failed}))}) "
          f"in {time.monotonic() - started:.1f} s; e.g. {enriched[0].element} -> EUR {enriched[0].result}")


if __name__ == "__main__":
    main()
