"""Local fraud-scoring service: a capacity-limited HTTP stand-in for the real model.

Run ``python -m testbed.scoring --help`` for the flags. Endpoints:
``POST /score`` (JSON array of ``{"txn_id": ...}``), ``GET /stats``,
``GET /stats/txns``, ``GET /healthz``, ``POST /admin/fault``,
``GET|POST /admin/config``, ``POST /admin/reset``. It prints exactly one
stdout line, ``scoring service listening on http://HOST:PORT``, once it accepts
connections.

Capacity model. A token bucket (``--rate`` tokens/s, ``--burst`` deep) admits
requests, whatever their size: one accepted request spends one token. A
capacity fault multiplies the rate. Admitted requests then need one of
``--max-concurrency`` slots (a short queue, else 503) and hold it for the
modelled latency. Normally a rejection is free, so goodput is min(offered, rate)
however aggressively clients retry.

Overload mode (``--overload-mode``) models a backend for which saying no is not
free: every 429 or 503-concurrency also spends ``--reject-cost`` (c) tokens, and
the bucket may go down to -burst. With offered load L (first tries plus
retries) above the rate r, the bucket stays empty and accepted load a solves
``a + c (L - a) = r``, i.e. ``a = (r - c L) / (1 - c)``: at c = 0.5 goodput is
``2r - L`` and reaches zero at L = 2r. A capacity fault that pushes clients into
retrying raises L; clients that retry immediately keep L high after the fault
ends, so goodput stays depressed (a metastable failure sustained by retries),
while clients that back off (honouring Retry-After) bring L under r and the
bucket, hence goodput, recovers. Outage rejections never cost tokens.

State is in memory: per-transaction attempt counts are kept for every id ever
seen (about 150 bytes each), fine for a few million ids per run.
"""
import sys

from testbed.scoring.server import main

if __name__ == "__main__":
    sys.exit(main())
