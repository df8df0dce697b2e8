"""The scoring step of each benchmarked client, as a PTransform with our output contract.

Every client maps `ParsedEvent | DeadLetter` to one PCollection of
`Enriched | Failed | DeadLetter` (the baselines unroll the job's lists of them
first, as a user would; the writer takes single outcomes; dead letters of earlier stages pass through;
one output, no Flatten, so the FnApiRunner fuses the whole path into one
stage), so `EnrichPayments(enrich=...)` runs them with an identical
read/parse/write/commit path, and every client encodes requests, validates
responses and builds outputs with the contract's codec. The baselines are
written the way a user would write them, not tuned to lose:

* `ours`: the pipeline's default step (`ThrottledEnrichment`, configured by the pipeline options).
* `naive` (`naive.py`), `pool` (`pool.py`): thread pools, see each module.
* `beam` (`request_response.py`): Beam's `RequestResponseIO`.
"""
from __future__ import annotations

import apache_beam as beam

from transforms.contract.loader import Contract

CLIENTS = ("ours", "naive", "pool", "beam")


def make_client(name: str, contract: Contract, batch_size: int) -> beam.PTransform | None:
    """None = the pipeline's default step (ours)."""
    if name == "ours":
        return None
    if name == "naive":
        from testbed.bench.clients.naive import naive_scoring
        client = naive_scoring(contract, batch_size)
    elif name == "pool":
        from testbed.bench.clients.pool import pool_scoring
        client = pool_scoring(contract, batch_size)
    elif name == "beam":
        from testbed.bench.clients.request_response import RequestResponseScoring
        client = RequestResponseScoring(contract, batch_size)
    else:
        raise ValueError(f"unknown client {name!r} (choose from {', '.join(CLIENTS)})")
    return beam.FlatMap(iter) | client
