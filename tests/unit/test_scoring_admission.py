"""Concurrency gate: cap, FIFO hand-off, bounded queue, timeouts, live limit changes."""
import asyncio

from testbed.scoring.admission import ConcurrencyGate


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_cap_and_queue_overflow() -> None:
    async def scenario() -> None:
        gate = ConcurrencyGate(limit=2, queue_size=1, timeout_s=10)
        assert await gate.acquire() and await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        assert gate.queued == 1
        assert await gate.acquire() is False  # queue full: refused at once
        gate.release()  # handed to the waiter, not returned
        assert await waiter is True
        assert (gate.active, gate.peak, gate.queued) == (2, 2, 0)

    run(scenario())


def test_waiters_are_served_in_order_and_a_newcomer_cannot_overtake() -> None:
    async def scenario() -> None:
        gate = ConcurrencyGate(limit=1, queue_size=5, timeout_s=10)
        await gate.acquire()
        order: list[int] = []

        async def wait(i: int) -> None:
            assert await gate.acquire()
            order.append(i)
            await asyncio.sleep(0.01)
            gate.release()

        tasks = [asyncio.create_task(wait(i)) for i in range(3)]
        await asyncio.sleep(0)
        gate.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        assert (gate.active, gate.peak) == (0, 1)

    run(scenario())


def test_queue_timeout_refuses_and_frees_the_queue_place() -> None:
    async def scenario() -> None:
        gate = ConcurrencyGate(limit=1, queue_size=1, timeout_s=0.02)
        await gate.acquire()
        assert await gate.acquire() is False
        assert gate.queued == 0
        gate.release()
        assert gate.active == 0

    run(scenario())


def test_cancelled_waiter_leaves_no_trace() -> None:
    async def scenario() -> None:
        gate = ConcurrencyGate(limit=1, queue_size=2, timeout_s=10)
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert gate.queued == 0
        gate.release()
        assert gate.active == 0

    run(scenario())


def test_raising_the_limit_admits_waiters_and_a_cut_drains() -> None:
    async def scenario() -> None:
        gate = ConcurrencyGate(limit=1, queue_size=3, timeout_s=10)
        await gate.acquire()
        waiters = [asyncio.create_task(gate.acquire()) for _ in range(2)]
        await asyncio.sleep(0)
        gate.set_limit(3)
        assert await asyncio.gather(*waiters) == [True, True]
        assert (gate.active, gate.peak) == (3, 3)
        gate.set_limit(1)
        late = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release()
        gate.release()  # active 3 -> 1 without handing over above the new cap
        assert gate.active == 1 and not late.done()
        gate.release()
        assert await late is True
        assert gate.active == 1

    run(scenario())
