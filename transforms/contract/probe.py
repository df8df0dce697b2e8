"""One real request before the job reads anything: is the service there, and is it the service the
contract describes?

The probe sends one event - the contract's `probe.event`, else one made of the
schema fields' examples - through the job's own `HttpJsonCaller`, and reads the
answer as the job would. A refusal (a status of class `stop`, a name that does
not resolve, a rejected certificate), a rejection of the event or an answer
with no usable result for it ends the job at start with one line and nothing
read or committed. Retryable answers (overload, an outage, a refused
connection) are retried, honouring `Retry-After`, until the probe's time is up.
"""
from __future__ import annotations

import asyncio
import time

from transforms.contract.http import HttpJsonCaller
from transforms.contract.loader import Contract
from transforms.contract.schema import probe_event
from transforms.control.signals import AttemptKind, AttemptResult, ElementFailure, timed_out


class ProbeFailed(RuntimeError):
    """The service cannot work with this contract; `str(e)` is one line saying why."""


def probe(contract: Contract, timeout_s: float) -> None:
    """Returns when the service gave a usable answer for the probe event; ProbeFailed otherwise."""
    try:
        event = probe_event(contract.schema, contract.probe())
    except ValueError as e:
        raise ProbeFailed(f"{contract.source}: {e}") from None
    asyncio.run(_probe(contract, event, timeout_s))


async def _probe(contract: Contract, event: object, timeout_s: float) -> None:
    caller = HttpJsonCaller(contract)
    try:
        await caller.open()
    except (OSError, ValueError) as e:   # a TLS file, a secret that cannot be read
        raise ProbeFailed(f"cannot call {contract.endpoint.url}: {e}") from None
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.2
        while True:
            left = deadline - time.monotonic()
            try:
                result = await asyncio.wait_for(caller.call([event]), max(0.5, left))
            except asyncio.TimeoutError:
                result = timed_out()
            if result.kind is not AttemptKind.RETRYABLE:
                _judge(contract, result)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeFailed(f"no usable answer from {contract.endpoint.url} to the start-up probe within "
                                  f"{timeout_s:g} s (last: {_said(result)}); --probe_timeout=0 skips the probe")
            await asyncio.sleep(min(left, max(delay, result.retry_after_s or 0.0)))
            delay = min(delay * 2, 5.0)
    finally:
        await caller.close()


def _judge(contract: Contract, result: AttemptResult) -> None:
    url, source = contract.endpoint.url, contract.source
    if result.kind is AttemptKind.STOP:
        raise ProbeFailed(f"{url} refused the start-up probe: {_said(result)}")
    if result.kind is AttemptKind.REJECTED:
        raise ProbeFailed(f"{url} rejected the start-up probe ({_said(result)}): check request.* and response.* "
                          f"in {source}, or set probe.event to an event the service accepts")
    value = result.value[0]
    if isinstance(value, ElementFailure):
        raise ProbeFailed(f"{url} answered the start-up probe without a usable result ({value.reason}: "
                          f"{value.detail}): check response.* in {source}")


def _said(result: AttemptResult) -> str:
    return f"{result.reason}: {result.detail}" if result.detail else result.reason
