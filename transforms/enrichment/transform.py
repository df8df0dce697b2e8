"""`ThrottledEnrichment`: any PCollection through any service, in bounded batches, at the rate the service sustains.

    results = (orders
               | ThrottledEnrichment(FxRates(), ThrottleSettings(batch_size=50), shard_key=lambda o: o.account))
    # -> Enriched(element, result, attempts, latency_ms) | Failed(element, reason, detail, attempts, last_status)

The transform keys elements into shards and runs a stateful DoFn per shard.
The DoFn is keyed only so that a shard is processed by one worker at a time -
that is what makes `max_in_flight` job-wide (see
`transforms/control/job_share.py`). Its open batches live in the DoFn
instance for the span of a bundle, bounded by events and bytes; full batches
go to the process-wide runtime at once, and `finish_bundle` sends every tail
and waits for all of them, so nothing outlives its bundle and no batch sits in
runner state (a runner that splits a stalled bundle cannot separate elements
from their batch, and no state write or coder call is paid per element). A
batch therefore waits at most until its bundle ends. Submitting blocks when
the runtime is saturated: the bundle stalls, so the source upstream stops
pulling and the backlog stays where it is (in Kafka, for the Kafka job).

Outputs keep their element's timestamp and window. When the input is in the
global window and nothing downstream reads element timestamps (the Kafka job),
`timestamp_of` saves the per-element window bookkeeping: an output then takes
the timestamp of the element in hand when it is emitted (`timestamp_of` its
own, at a bundle's end). With `lists=True` the elements in and out are lists (the Kafka job's
record batches): the shard key splits each input list by shard, and each completed batch leaves
as one list of outcomes.
"""
from __future__ import annotations

import hashlib
import itertools
import zlib
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.internal import pickler
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.control.batching import BatchPolicy
from transforms.control.settings import DEFAULTS, ThrottleSettings
from transforms.control.signals import ElementFailure
from transforms.enrichment.caller import Caller
from transforms.enrichment.outcomes import Enriched, Failed, OutcomeList
from transforms.enrichment.runtime import BatchResult, Runtime, RuntimeFactory, set_gauges, shared_runtime
from transforms.monitoring import metrics
from transforms.monitoring.services import StartingServices, WorkerServices

_BATCHES = metrics.counter("batches")
_BATCH_SIZE = metrics.distribution("batch_size")
_RETRIES = metrics.counter("retries")
_THROTTLED_MS = metrics.counter("throttled_ms")
_EVENTS_SCORED = metrics.counter("events_scored")
_SCORE_DEAD_LETTERS = metrics.counter("score_dead_letters")
_REQUESTS = metrics.counter("requests")
_REQUEST_LATENCY_MS = metrics.distribution("request_latency_ms")

#: Buckets of the `requests` metric; `outcome_bucket` maps every attempt to one.
REQUEST_OUTCOMES = ("ok", "429", "5xx", "timeout", "connection_error", "other")
_REQUESTS_BY_OUTCOME = {outcome: _REQUESTS.bind(outcome=outcome) for outcome in REQUEST_OUTCOMES}
_GLOBAL_WINDOWS = (GlobalWindow(),)


def outcome_bucket(reason: str) -> str:
    """`reason` of an attempt ("ok", "http_429", "timeout", ...) -> one of REQUEST_OUTCOMES."""
    if reason in ("ok", "timeout", "connection_error"):
        return reason
    if reason == "http_429":
        return "429"
    if reason.startswith("http_5"):
        return "5xx"
    return "other"


def record_batch(result: BatchResult) -> None:
    """The metrics of one completed batch (called on the bundle thread, so Beam records them)."""
    out = result.outcome
    events = len(result.batch)
    dead = result.dead_lettered()
    _BATCHES.inc()
    _BATCH_SIZE.observe(events)
    _RETRIES.inc(max(0, out.attempts - 1))
    if events - dead:
        _EVENTS_SCORED.inc(events - dead)
    if dead:
        _SCORE_DEAD_LETTERS.inc(dead)
    for reason, latency in zip(out.reasons, out.latencies_s):
        _REQUESTS_BY_OUTCOME[outcome_bucket(reason)].inc()
        _REQUEST_LATENCY_MS.observe(latency * 1000)


def outcomes(result: BatchResult) -> list[Enriched[Any, Any] | Failed[Any]]:
    """One `Enriched` or `Failed` per element of a completed batch, in order."""
    out = result.outcome
    if not out.ok:
        reason, detail = out.failure or "failed", out.error or ""
        return [Failed(element, reason, detail, out.attempts, out.last_status) for element in result.batch]
    latency_ms, attempts = round(result.elapsed_s * 1000, 3), out.attempts
    if result.dead_lettered() == 0:
        return [Enriched(element, value, attempts, latency_ms) for element, value in zip(result.batch, out.value)]
    return [Failed(element, value.reason, value.detail, attempts, out.last_status) if isinstance(value, ElementFailure)
            else Enriched(element, value, attempts, latency_ms) for element, value in zip(result.batch, out.value)]


def shard_of(key: Hashable, num_shards: int) -> int:
    """Stable across processes (unlike hash() of a str), so one key always lands in one shard."""
    if isinstance(key, str):
        return zlib.crc32(key.encode()) % num_shards
    if isinstance(key, int):
        return key % num_shards
    return zlib.crc32(key if isinstance(key, bytes) else str(key).encode()) % num_shards


class _OpenBatch:
    __slots__ = ("elements", "stamps", "nbytes")

    def __init__(self) -> None:
        self.elements: list[Any] = []
        self.stamps: list[Any] = []     # per element: its (timestamp, window) (none for global input)
        self.nbytes = 0


class _EnrichBatchesFn(beam.DoFn):
    """Keyed by shard; batches are formed within a bundle (see the module docstring)."""

    # Declared so that the runner routes each shard key to one worker at a time; never read or set.
    # They hang on a timer callback rather than on process(): a state parameter of process() is
    # filled for every element (a twentieth of the step's cost), one of a callback is not.
    KEYED = ReadModifyWriteStateSpec("keyed", BooleanCoder())
    NEVER = TimerSpec("never", TimeDomain.WATERMARK)

    def __init__(self, caller: Caller[Any], settings: ThrottleSettings, key: str,
                 size_of: Callable[[Any], int] | None, passthrough: tuple[type, ...],
                 runtime_factory: RuntimeFactory) -> None:
        self._caller, self._settings, self._key = caller, settings, key
        self._policy = BatchPolicy(settings.batch_size, settings.max_batch_bytes)
        self._size_of = size_of
        self._passthrough = passthrough
        self._runtime_factory = runtime_factory
        self._runtime: Runtime | None = None
        self._open: dict[int, _OpenBatch] = {}
        self._pending: deque[tuple[Future[BatchResult], list[Any]]] = deque()

    def setup(self) -> None:
        self._runtime = self._runtime_factory(self._settings, self._caller, self._key)

    def start_bundle(self) -> None:
        self._open = {}
        self._pending = deque()

    def process(self, keyed: tuple[int, Any], timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterator[Any]:
        return self._add(keyed, (timestamp, window))

    def _add(self, keyed: tuple[int, Any], stamp: Any) -> Iterator[Any]:
        shard, element = keyed
        if isinstance(element, self._passthrough):
            yield element   # not ours to enrich (an earlier stage's dead letter): it travels on
            return
        self._put(shard, element, stamp)
        if self._pending and self._pending[0][0].done():
            yield from self._completed(block=False)

    def _put(self, shard: int, element: Any, stamp: Any) -> None:
        """Adds `element` to its shard's open batch; a batch that is full goes to the runtime."""
        batch = self._open.get(shard)
        if batch is None:
            batch = self._open[shard] = _OpenBatch()
        size = self._size_of(element) if self._size_of is not None else 0
        if not self._policy.fits(len(batch.elements), batch.nbytes, size):
            self._submit(shard, batch)
            batch = self._open[shard] = _OpenBatch()
        batch.elements.append(element)
        if stamp is not None:
            batch.stamps.append(stamp)
        batch.nbytes += size
        if self._policy.full(len(batch.elements), batch.nbytes):
            self._submit(shard, batch)
            del self._open[shard]

    def _submit(self, shard: int, batch: _OpenBatch) -> None:
        if batch.elements:
            assert self._runtime is not None
            self._pending.append((self._runtime.submit(batch.elements, shard), batch.stamps))

    def _completed(self, block: bool) -> Iterator[Any]:
        assert self._runtime is not None
        while self._pending and (block or self._pending[0][0].done()):
            future, stamps = self._pending.popleft()
            result = future.result()
            self._runtime.account(result)      # raises when the job must stop: before anything is emitted
            record_batch(result)
            _THROTTLED_MS.inc(self._runtime.take_throttled_ms())
            yield from self._stamped(outcomes(result), stamps, block)

    @staticmethod
    def _stamped(values: list[Any], stamps: list[Any], at_end: bool) -> Iterable[Any]:
        return [WindowedValue(value, timestamp, (window,)) for value, (timestamp, window) in zip(values, stamps)]

    @on_timer(NEVER)
    def _keyed(self, keyed=beam.DoFn.StateParam(KEYED)) -> Iterable[Any]:
        return ()

    def finish_bundle(self) -> Iterable[WindowedValue]:
        """Sends every open batch and waits for all of them: nothing outlives its bundle."""
        for shard, batch in self._open.items():
            self._submit(shard, batch)
        self._open = {}
        yield from self._completed(block=True)
        assert self._runtime is not None
        set_gauges(self._runtime.gauges())   # the live ones are sampled; Beam's report the last bundle's


class _EnrichGlobalBatchesFn(_EnrichBatchesFn):
    """Global-window input whose downstream does not read element timestamps (`timestamp_of`): no
    window parameters to fill, no timestamp to make, per element. An output emitted while the
    bundle runs is stamped by Beam like the element then in hand; one emitted at the bundle's end
    (where there is none) gets `timestamp_of` its own element."""

    def __init__(self, *args: Any, timestamp_of: Callable[[Any], Timestamp]) -> None:
        super().__init__(*args)
        self._timestamp_of = timestamp_of

    def process(self, keyed: tuple[int, Any]) -> Iterator[Any]:  # type: ignore[override]
        return self._add(keyed, None)

    def _stamped(self, values: list[Any], stamps: list[Any], at_end: bool) -> Iterable[Any]:
        if not at_end:
            return values
        timestamp_of = self._timestamp_of
        return [WindowedValue(v, timestamp_of(v.element), _GLOBAL_WINDOWS) for v in values]


class _EnrichListsFn(_EnrichGlobalBatchesFn):
    """`_EnrichGlobalBatchesFn` over lists: an input element is a shard's list of elements, an
    output one completed batch's outcomes (or the input's elements passed through), so Beam's
    cost per element is paid per list."""

    def process(self, keyed: tuple[int, list[Any]]) -> Iterator[list[Any]]:  # type: ignore[override]
        shard, elements = keyed
        passthrough, put = self._passthrough, self._put
        passed = []
        for element in elements:
            if isinstance(element, passthrough):
                passed.append(element)
            else:
                put(shard, element, None)
        if passed:
            yield passed
        if self._pending and self._pending[0][0].done():
            yield from self._completed(block=False)

    def _stamped(self, values: list[Any], stamps: list[Any], at_end: bool) -> Iterable[Any]:
        if not at_end:
            return (values,)
        return (WindowedValue(values, self._timestamp_of(values[0].element), _GLOBAL_WINDOWS),)


class ThrottledEnrichment(beam.PTransform):
    """PCollection[E] -> PCollection[Enriched[E, R] | Failed[E]] through `caller`, throttled.

    - `caller`: a `transforms.enrichment.Caller` (one attempt at one batch).
    - `settings`: batch bounds, the job-wide in-flight cap, rates, retries, deadlines, the
      dead-letter breaker (`ThrottleSettings`; every default is declared there).
    - `shard_key(element)`: what spreads elements over the `num_shards` shards (elements of one key
      are batched together); by default elements are dealt round-robin.
    - `size_of(element)`: its size in bytes for `max_batch_bytes`; by default sizes are not bounded.
    - `passthrough`: element types that are passed on untouched (an earlier stage's dead letters).
    - `timestamp_of(element)`: for global-window input whose downstream does not read element
      timestamps: skips the per-element window bookkeeping (see the module docstring).
    - `lists`: the input's elements are lists of elements (global window, `timestamp_of` needed),
      and so are the outputs - one per completed batch, one per input list's passed-through
      elements - so Beam's cost per element is paid per list (the Kafka job's record batches).
      The outputs' type hint is `OutcomeList`, whose coder estimates a list's size from a few of
      its outcomes.
    - `shard_list_type`: with `lists`, the type hint of one shard's list where the lists cross to
      the stateful step, which a runner encodes; Beam's coder registry picks the coder by it (by
      default a list of pickled elements; the Kafka job's `EventList` has a compact one).

    One runtime (throttle, caller, event loop) per worker process is shared by every instance
    of the same caller and settings. When the job must stop - the service answered with a
    status of class `stop`, or more than `max_dead_letter_share` of the last `breaker_window`
    elements failed - the bundle fails with `EnrichmentStopped` before emitting them.
    """

    def __init__(self, caller: Caller[Any], settings: ThrottleSettings = DEFAULTS, *,
                 shard_key: Callable[[Any], Hashable] | None = None,
                 size_of: Callable[[Any], int] | None = None,
                 passthrough: tuple[type, ...] = (),
                 timestamp_of: Callable[[Any], Timestamp] | None = None,
                 lists: bool = False,
                 shard_list_type: Any = list[Any],
                 runtime_factory: RuntimeFactory = shared_runtime) -> None:
        super().__init__()
        if lists and timestamp_of is None:
            raise ValueError("lists=True needs timestamp_of: list elements live in the global window")
        self._lists, self._shard_list_type = lists, shard_list_type
        self._caller, self._settings = caller, settings
        self._shard_key, self._size_of, self._passthrough = shard_key, size_of, tuple(passthrough)
        self._timestamp_of = timestamp_of
        self._runtime_factory = runtime_factory
        # Every DoFn instance of this caller and these settings in a process shares one runtime.
        self._key = hashlib.sha256(pickler.dumps((caller, settings))).hexdigest()[:16]

    def with_worker_services(self, services: WorkerServices) -> ThrottledEnrichment:
        """The same transform, starting the worker's `services` (metrics endpoint, export) where it runs."""
        return self.with_runtime_factory(StartingServices(services, self._runtime_factory))

    def with_runtime_factory(self, runtime_factory: RuntimeFactory) -> ThrottledEnrichment:
        """The same transform on other runtimes (the benchmark's stand-ins, tests' fakes)."""
        return ThrottledEnrichment(self._caller, self._settings, shard_key=self._shard_key, size_of=self._size_of,
                                   passthrough=self._passthrough, timestamp_of=self._timestamp_of,
                                   lists=self._lists, shard_list_type=self._shard_list_type,
                                   runtime_factory=runtime_factory)

    def expand(self, elements):
        n, key_of, passthrough = self._settings.num_shards, self._shard_key, self._passthrough
        args = (self._caller, self._settings, self._key, self._size_of, self._passthrough, self._runtime_factory)
        if self._lists:
            return (elements
                    | "KeyByShard" >> beam.FlatMap(_ShardLists(n, key_of, passthrough)).with_output_types(
                        tuple[int, self._shard_list_type])
                    | "EnrichBatches" >> beam.ParDo(_EnrichListsFn(*args, timestamp_of=self._timestamp_of))
                    .with_output_types(OutcomeList))
        fn = (_EnrichBatchesFn(*args) if self._timestamp_of is None
              else _EnrichGlobalBatchesFn(*args, timestamp_of=self._timestamp_of))
        return (elements
                | "KeyByShard" >> beam.Map(_ShardKey(n, key_of, passthrough)).with_output_types(tuple[int, Any])
                | "EnrichBatches" >> beam.ParDo(fn))


class _ShardKey:
    """element -> (shard, element): by `key_of`, or round-robin (elements without a key, and those
    passed through)."""

    def __init__(self, num_shards: int, key_of: Callable[[Any], Hashable] | None,
                 passthrough: tuple[type, ...]) -> None:
        self._n, self._key_of, self._passthrough = num_shards, key_of, passthrough
        self._next: Callable[[], int] | None = None

    def __call__(self, element: Any) -> tuple[int, Any]:
        return self.shard(element), element

    def shard(self, element: Any) -> int:
        if self._key_of is None or isinstance(element, self._passthrough):
            if self._next is None:
                self._next = itertools.cycle(range(self._n)).__next__
            return self._next()
        key = self._key_of(element)
        if key.__class__ is str:   # the common case, without a call
            return zlib.crc32(key.encode()) % self._n
        return shard_of(key, self._n)


class _ShardLists(_ShardKey):
    """list -> (shard, the list's elements of that shard) per shard it holds, in their order."""

    def __call__(self, elements: list[Any]) -> Iterator[tuple[int, list[Any]]]:  # type: ignore[override]
        shards: dict[int, list[Any]] = {}
        shard = self.shard
        for element in elements:
            key = shard(element)
            group = shards.get(key)
            if group is None:
                shards[key] = [element]
            else:
                group.append(element)
        return iter(shards.items())
