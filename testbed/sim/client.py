"""A worker process of the pipeline, in simulated time, around the real throttle.

Each `Worker` owns an `AdaptiveThrottle` built by the production factory
(`transforms.control.factory.build_throttle`) from the job's settings on a
simulated clock, and performs its `steps()` the way
`AdaptiveThrottle.call` does with threads: pacer sleeps and parked backoffs
become scheduled wake-ups, attempts go to the service model holding an
in-flight slot, and a control "thread" ticks the controllers every tick.
Around it, the runtime and the DoFn: a batch is submitted when the throttle
has room for it (`try_enter`, as the runtime's blocking `enter`), and a
bundle of `bundle_batches` batches ends by waiting for every outstanding batch
(`finish_bundle`) before the next starts `bundle_gap_s` later.
"""
from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from testbed.sim.engine import SimClock, Simulation
from testbed.sim.service import Reply, ServiceModel
from transforms.control.factory import build_throttle
from transforms.control.settings import DEFAULTS, ThrottleSettings
from transforms.control.signals import DEFAULT_STATUS, AttemptResult, connection_refused, succeeded
from transforms.control.throttle import Attempt, CallOutcome, Park, Sleep, Steps

_BATCH_IDS = itertools.count()


@dataclass
class WorkerConfig:
    """One worker: the job's `ThrottleSettings` (its defaults, unless a scenario says otherwise) and
    what the runtime and the runner decide around the throttle."""
    settings: ThrottleSettings = DEFAULTS
    batch_size: int = 1              # events per request, as the service model counts them
    max_in_flight: int = 32          # this worker's hard cap (its share of the job's)
    share: float = 1.0               # its part of the job, for an advertised quota
    bundle_batches: int | None = None
    bundle_gap_s: float = 0.05
    demand_batches: int | None = None     # None = an endless backlog
    controller: dict[str, Any] = field(default_factory=dict)   # extra CubicRateController arguments


@dataclass
class WorkerStats:
    completed: int = 0
    dead_lettered: int = 0
    attempts: int = 0
    peak_outstanding: int = 0


class Worker:
    def __init__(self, sim: Simulation, service: ServiceModel, wid: int, config: WorkerConfig, seed: int) -> None:
        self._sim, self._service, self.wid, self.config = sim, service, wid, config
        self.throttle = build_throttle(config.settings, config.max_in_flight, clock=SimClock(sim),
                                       rng=random.Random(seed), controller_overrides=config.controller)
        self.throttle.controller.set_share(config.share)
        self.stats = WorkerStats()
        self._in_bundle = 0
        self._closing = False
        self._submitted = 0
        self._slot_waiters: deque[tuple[Steps, int]] = deque()
        self._parked: dict[int, tuple[Steps, int]] = {}
        self._park_ids = itertools.count()
        self._recoveries = 0

    # ---- the DoFn and the runtime ----------------------------------------------------------------

    def start(self, until: float) -> None:
        self._sim.every(self.throttle.controller.tick_s, self._tick, until)
        self._fill()

    def _has_demand(self) -> bool:
        return self.config.demand_batches is None or self._submitted < self.config.demand_batches

    def _fill(self) -> None:
        while not self._closing and self._has_demand() and self.throttle.try_enter():
            self._submitted += 1
            self.stats.peak_outstanding = max(self.stats.peak_outstanding, self.throttle.outstanding)
            self._in_bundle += 1
            self._advance(self.throttle.steps(), next(_BATCH_IDS), None)
            if self.config.bundle_batches and self._in_bundle >= self.config.bundle_batches:
                self._closing = True    # finish_bundle: wait for everything outstanding

    def _finished(self, outcome: CallOutcome) -> None:
        self.throttle.leave()
        if outcome.ok:
            self.stats.completed += 1
        else:
            self.stats.dead_lettered += 1
        if self._closing and self.throttle.outstanding == 0:
            self._closing, self._in_bundle = False, 0
            self._sim.after(self.config.bundle_gap_s, self._fill)
        else:
            self._fill()

    # ---- performing the throttle's steps -------------------------------------------------------

    def _advance(self, steps: Steps, batch: int, sent: Any) -> None:
        try:
            step = steps.send(sent)
        except StopIteration as done:
            self._finished(done.value)
            return
        if isinstance(step, Attempt):   # the model answers within its latency: no time bound to enforce
            if self.throttle.inflight.try_acquire():
                self._attempt(steps, batch)
            else:
                self._slot_waiters.append((steps, batch))
        elif isinstance(step, Park):
            park = next(self._park_ids)
            self._parked[park] = (steps, batch)
            self.throttle.parked(+1)
            self._sim.after(step.seconds, self._unpark, park)
        else:
            assert isinstance(step, Sleep)
            self._sim.after(step.seconds, self._advance, steps, batch, None)

    def _attempt(self, steps: Steps, batch: int) -> None:
        self.throttle.started()
        self.stats.attempts += 1
        begun = self._sim.now
        self._service.request(self.wid, batch, self.config.batch_size,
                              lambda reply: self._replied(steps, batch, reply, begun))

    def _replied(self, steps: Steps, batch: int, reply: Reply, begun: float) -> None:
        self.throttle.inflight.release()
        while self._slot_waiters and self.throttle.inflight.try_acquire():
            self._attempt(*self._slot_waiters.popleft())
        self._advance(steps, batch, (_result(reply), self._sim.now - begun))
        self._tick()

    def _unpark(self, park: int) -> None:
        entry = self._parked.pop(park, None)
        if entry is not None:
            self.throttle.parked(-1)
            self._advance(entry[0], entry[1], None)

    def _tick(self) -> None:
        if self.throttle.tick():
            while self._slot_waiters and self.throttle.inflight.try_acquire():
                self._attempt(*self._slot_waiters.popleft())
            self._fill()
        if self.throttle.recoveries != self._recoveries:
            self._recoveries = self.throttle.recoveries
            for park in list(self._parked):
                self._sim.after(0.0, self._unpark, park)
        self._fill()


def _result(reply: Reply) -> AttemptResult:
    if reply.status is None:
        return connection_refused()
    if reply.status == 200:
        return succeeded(None, policy_rps=reply.policy_rps)
    return DEFAULT_STATUS.classify(reply.status, reply.retry_after_s, reply.policy_rps)
