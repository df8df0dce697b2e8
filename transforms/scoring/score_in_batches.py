"""Score events in bounded batches through the process-wide throttle.

`ScoreInBatches` keys events into shards by account id and runs a stateful
DoFn per shard. The DoFn is keyed only so that a shard is processed by one
worker at a time - that is what makes `--max_in_flight` job-wide (see
`transforms/control/job_share.py`). Its open batches live in the DoFn
instance for the span of a bundle, bounded by events and bytes; full batches
go to the shared runtime at once, and `finish_bundle` sends every tail and
waits for all of them, so nothing outlives its bundle and no batch sits in
runner state. Keeping them out of state removed a state write, a coder call
and a size estimate per event (a sixth of the drain's CPU), and means a runner
that splits a stalled bundle cannot separate events from their batch (Prism
loses such state: docs/prism.md). A batch therefore waits at most until its
bundle ends; on Flink streaming the launcher sets the bundle time from
`--max_batch_wait`. Submitting blocks when the runtime is saturated: the
bundle stalls, so the reader stops pulling and the backlog stays in Kafka.
"""
from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from typing import Any

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.control.batching import BatchPolicy
from transforms.events import DeadLetter, ParsedEvent, ScoredEvent
from transforms.monitoring import metrics
from transforms.monitoring.config import MonitoringConfig
from transforms.scoring.codec import REQUEST_OUTCOMES, dead_letters, outcome_bucket, scored_events
from transforms.scoring.runtime import BatchResult, Runtime, RuntimeFactory, ScoringConfig, set_gauges, shared_runtime
from transforms.windowing import in_global_window

_BATCHES = metrics.counter("batches")
_BATCH_SIZE = metrics.distribution("batch_size")
_RETRIES = metrics.counter("retries")
_THROTTLED_MS = metrics.counter("throttled_ms")
_EVENTS_SCORED = metrics.counter("events_scored")
_SCORE_DEAD_LETTERS = metrics.counter("score_dead_letters")
_REQUESTS = metrics.counter("requests")
_REQUESTS_BY_OUTCOME = {outcome: _REQUESTS.bind(outcome=outcome) for outcome in REQUEST_OUTCOMES}
_REQUEST_LATENCY_MS = metrics.distribution("request_latency_ms")


def shard_of(account_id: str, num_shards: int) -> int:
    """Stable across processes (unlike hash()), so one account always lands in one shard."""
    return zlib.crc32(account_id.encode()) % num_shards


def record_batch(result: BatchResult) -> None:
    """The metrics of one completed batch (called on the bundle thread, so Beam records them)."""
    out = result.outcome
    events = len(result.batch)
    _BATCHES.inc()
    _BATCH_SIZE.observe(events)
    _RETRIES.inc(out.attempts - 1)
    _THROTTLED_MS.inc(int(out.throttled_s * 1000))
    (_EVENTS_SCORED if out.ok else _SCORE_DEAD_LETTERS).inc(events)
    for reason, latency in zip(out.reasons, out.latencies_s):
        _REQUESTS_BY_OUTCOME[outcome_bucket(reason)].inc()
        _REQUEST_LATENCY_MS.observe(latency * 1000)


def _emit(result: BatchResult) -> Iterator[tuple[ScoredEvent | DeadLetter, int]]:
    """(output, Kafka timestamp in ms of the event it came from)."""
    out = result.outcome
    if out.ok:
        outputs = scored_events(result.batch, out.value, result.elapsed_s * 1000, out.attempts)
    else:
        outputs = dead_letters(result.batch, out.error or "scoring failed", out.attempts, out.last_status)
    for output, parsed in zip(outputs, result.batch):
        yield output, parsed.timestamp_ms


class _OpenBatch:
    __slots__ = ("events", "nbytes")

    def __init__(self) -> None:
        self.events: list[ParsedEvent] = []
        self.nbytes = 0


class ScoreBatchesFn(beam.DoFn):
    """Keyed by shard; batches are formed within a bundle (see the module docstring)."""

    # Declared so that the runner routes each shard key to one worker at a time; never read or set.
    # They hang on a timer callback rather than on process(): a state parameter of process() is
    # filled for every event (a twentieth of the step's cost), one of a callback is not.
    KEYED = ReadModifyWriteStateSpec("keyed", BooleanCoder())
    NEVER = TimerSpec("never", TimeDomain.WATERMARK)

    def __init__(self, config: ScoringConfig, policy: BatchPolicy,
                 monitoring: MonitoringConfig | None = None,
                 runtime_factory: RuntimeFactory = shared_runtime) -> None:
        self._config = config
        self._policy = policy
        self._monitoring = monitoring
        self._runtime_factory = runtime_factory
        self._runtime: Runtime | None = None
        self._open: dict[int, _OpenBatch] = {}
        self._pending: deque[Future[BatchResult]] = deque()

    def setup(self) -> None:
        self._runtime = self._runtime_factory(self._config)
        if self._monitoring is not None:
            # Imported here: the Google client libraries load only when export is on.
            from transforms.monitoring.exporter import ensure_exporter
            ensure_exporter(self._monitoring)  # once per worker process; exports while the job runs

    def start_bundle(self) -> None:
        self._open = {}
        self._pending = deque()

    def process(self, element: tuple[int, ParsedEvent | DeadLetter]) -> Iterator[object]:
        shard, parsed = element
        if isinstance(parsed, DeadLetter):
            yield parsed   # an earlier stage's dead letter travels on to the writer
            return
        batch = self._open.get(shard)
        if batch is None:
            batch = self._open[shard] = _OpenBatch()
        item_bytes = len(parsed.raw)
        if not self._policy.fits(len(batch.events), batch.nbytes, item_bytes):
            self._submit(shard, batch)
            batch = self._open[shard] = _OpenBatch()
        batch.events.append(parsed)
        batch.nbytes += item_bytes
        if self._policy.full(len(batch.events), batch.nbytes):
            self._submit(shard, batch)
            del self._open[shard]
        if self._pending and self._pending[0].done():
            yield from self._completed(block=False)

    def _submit(self, shard: int, batch: _OpenBatch) -> None:
        if batch.events:
            assert self._runtime is not None
            self._pending.append(self._runtime.submit(batch.events, shard))

    def _completed(self, block: bool) -> Iterator[object]:
        for value, _ in self._completed_with_timestamps(block):
            yield value

    def _completed_with_timestamps(self, block: bool) -> Iterator[tuple[object, int]]:
        while self._pending and (block or self._pending[0].done()):
            record_batch(result := self._pending.popleft().result())
            yield from _emit(result)

    @on_timer(NEVER)
    def _keyed(self, keyed=beam.DoFn.StateParam(KEYED)) -> Iterable[object]:
        return ()

    def finish_bundle(self) -> Iterable[object]:
        """Sends every open batch and waits for all of them: nothing outlives its bundle."""
        for shard, batch in self._open.items():
            self._submit(shard, batch)
        self._open = {}
        for value, ts_ms in self._completed_with_timestamps(block=True):
            yield in_global_window(value, Timestamp(micros=ts_ms * 1000))
        assert self._runtime is not None
        set_gauges(self._runtime.gauges())   # the live ones are sampled; Beam's report the last bundle's


def shard_key(item: ParsedEvent | DeadLetter, num_shards: int) -> int:
    if isinstance(item, DeadLetter):
        return item.source.partition % num_shards
    return shard_of(item.event.account_id, num_shards)


class ScoreInBatches(beam.PTransform):
    """ParsedEvent -> ScoredEvent | DeadLetter; dead letters from earlier stages pass through.

    One output PCollection (no tagged outputs): see transforms/events.py for why.
    """

    def __init__(self, config: ScoringConfig, policy: BatchPolicy, num_shards: int,
                 monitoring: MonitoringConfig | None = None,
                 runtime_factory: RuntimeFactory = shared_runtime) -> None:
        """`runtime_factory(config)` gives each DoFn instance its runtime; the default shares one
        per process and configuration (tests pass a fake)."""
        super().__init__()
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self._config, self._policy, self._num_shards = config, policy, num_shards
        self._monitoring = monitoring
        self._runtime_factory = runtime_factory

    def expand(self, events):
        n = self._num_shards
        return (events
                | "KeyByShard" >> beam.Map(lambda item: (shard_key(item, n), item))
                .with_output_types(tuple[int, Any])
                | "ScoreBatches" >> beam.ParDo(ScoreBatchesFn(self._config, self._policy, self._monitoring,
                                                              self._runtime_factory)))
