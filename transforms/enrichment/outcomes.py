"""What `ThrottledEnrichment` emits for each element: `Enriched` or `Failed`, in one PCollection.

One PCollection, not tagged outputs: a writer downstream takes both, and on the
FnApiRunner the Flatten that merging tagged outputs needs breaks stage fusion,
so a blocked call would no longer stop the reader upstream.

A `Failed` element's `reason` is a short, stable code for filtering and
replaying dead letters:
- `deadline`: the batch ran out of its deadline (a slow or absent service, an
  empty retry budget); `retries_exhausted`: it used `max_attempts`;
- `http_<status>`: the service rejected the batch (status class `reject`);
- `invalid_response`: a complete answer of the wrong shape;
- a caller's own per-element code (`missing_result`, `invalid_result`, ...);
- `caller_error`: the caller raised (a bug in it; `detail` names the exception).
"""
from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

E = TypeVar("E")
R = TypeVar("R")


class Enriched(msgspec.Struct, Generic[E, R], frozen=True):
    element: E
    result: R
    attempts: int           # attempts the batch took
    latency_ms: float       # from the batch's submission to its successful answer


class Failed(msgspec.Struct, Generic[E], frozen=True):
    element: E
    reason: str             # a short code (see the module docstring)
    detail: str             # one line for people
    attempts: int
    last_status: int | None = None
