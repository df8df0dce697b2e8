"""Concurrency admission: a fixed number of slots plus a short, bounded FIFO queue.

A freed slot is handed straight to the oldest waiter instead of being put back,
so a newcomer can never overtake the queue and ``active`` never exceeds
``limit`` - which is what lets ``peak`` be reported exactly.
"""
from __future__ import annotations

import asyncio
from collections import deque


class ConcurrencyGate:
    """Up to ``limit`` holders; up to ``queue_size`` waiters, each for at most ``timeout_s``."""

    def __init__(self, limit: int, queue_size: int, timeout_s: float) -> None:
        self.limit = limit
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.active = 0
        self.peak = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def _grant(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)

    async def acquire(self) -> bool:
        """True once a slot is held (caller must :meth:`release`), False if refused."""
        if self.active < self.limit and not self._waiters:
            self._grant()
            return True
        if len(self._waiters) >= self.queue_size:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_later(self.timeout_s, self._expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release()  # the slot arrived just as the caller went away
            self._forget(fut)
            raise
        finally:
            timer.cancel()

    def _forget(self, fut: asyncio.Future[bool]) -> None:
        try:
            self._waiters.remove(fut)
        except ValueError:
            pass

    def _expire(self, fut: asyncio.Future[bool]) -> None:
        if not fut.done():
            self._forget(fut)
            fut.set_result(False)

    def release(self) -> None:
        """Free a slot: hand it to the oldest live waiter, else return it."""
        while self._waiters and self.active <= self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                return
        self.active -= 1

    def set_limit(self, limit: int) -> None:
        """Change the cap live; a raise admits waiters at once, a cut drains naturally."""
        self.limit = limit
        while self.active < self.limit and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self._grant()
                fut.set_result(True)
