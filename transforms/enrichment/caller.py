"""The seam a user fills: how one batch of their elements is sent to their service.

A `Caller` makes one attempt at a batch and says what happened as an
`AttemptResult`; everything around the attempt - batching, pacing at the
learned rate, the in-flight cap, backoff with jitter and `Retry-After`, the
retry budget, the deadline, dead letters and stopping a misconfigured job - is
the runtime's. Retrying inside a caller would hide attempts from the
controller, so a caller never retries.

    class FxRates:
        async def open(self):  self.session = aiohttp.ClientSession()
        async def close(self): await self.session.close()
        async def call(self, batch):
            async with self.session.post(URL, json=[o.currency for o in batch]) as resp:
                if resp.status != 200:
                    return DEFAULT_STATUS.classify(resp.status, parse_retry_after(resp.headers.get("Retry-After")))
                rates = await resp.json()
                return succeeded([rates.get(o.currency) or ElementFailure("unknown_currency") for o in batch])

The runtime bounds every attempt by the request timeout and what is left of
the batch's deadline (an attempt still running then is cancelled and counts as
a timeout), so a caller needs no timeout of its own.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

from transforms.control.signals import AttemptResult

E = TypeVar("E", contravariant=True)
In = TypeVar("In")


class Caller(Protocol[E]):
    """One attempt at one batch. Created where the pipeline is built and pickled to the workers;
    `open` and `close` run on the worker's event loop, around every `call` of that process."""

    async def open(self) -> None:
        """Make clients and sessions (on the event loop that will use them)."""

    async def call(self, batch: Sequence[E]) -> AttemptResult:
        """One attempt. On success `value` holds one result per element, in order, each a result or an
        `ElementFailure` (that element alone is dead-lettered). Never raises for what the service did:
        an exception is a bug, and the batch is dead-lettered with its type and message."""

    async def close(self) -> None:
        """Release what `open` made."""


class BlockingCaller(Generic[In]):
    """A `Caller` around a blocking function `fn(batch) -> AttemptResult` (a synchronous SDK, say):
    each attempt runs on a thread of its own pool. A thread cannot be cut short, so an attempt past
    its time bound frees its in-flight slot but keeps its thread until `fn` returns; size `threads`
    for that (the default is the default in-flight cap)."""

    def __init__(self, fn: Callable[[Sequence[In]], AttemptResult], threads: int = 32) -> None:
        self._fn, self._threads = fn, threads
        self._pool: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="blocking-caller")

    async def call(self, batch: Sequence[In]) -> AttemptResult:
        assert self._pool is not None, "open() first"
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._fn, batch)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
