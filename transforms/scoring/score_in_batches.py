"""Score events in bounded batches through the process-wide throttle.

`ScoreInBatches` keys events into shards by account id and runs a stateful
DoFn per shard that buffers at most one batch in state (bounded by events and
bytes), hands full batches to the shared `ScoringRuntime` and emits results as
they complete. Submitting blocks when the runtime is saturated: the bundle
stalls, so the reader stops pulling and the backlog stays in Kafka. The tail
of each shard is flushed by an end-of-window timer (bounded input) or, in
streaming, by a processing-time timer after `max_wait_s`.
"""
from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, TupleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.control.batching import BatchPolicy
from transforms.events import DeadLetter, ParsedEvent, ScoredEvent
from transforms.monitoring import metrics
from transforms.monitoring.config import MonitoringConfig
from transforms.scoring.codec import dead_letters, outcome_bucket, scored_events
from transforms.scoring.runtime import BatchResult, Runtime, RuntimeFactory, ScoringConfig, set_gauges, shared_runtime

_BATCHES = metrics.counter("batches")
_BATCH_SIZE = metrics.distribution("batch_size")
_RETRIES = metrics.counter("retries")
_THROTTLED_MS = metrics.counter("throttled_ms")
_EVENTS_SCORED = metrics.counter("events_scored")
_SCORE_DEAD_LETTERS = metrics.counter("score_dead_letters")
_REQUESTS = metrics.counter("requests")
_REQUEST_LATENCY_MS = metrics.distribution("request_latency_ms")


def shard_of(account_id: str, num_shards: int) -> int:
    """Stable across processes (unlike hash()), so one account always lands in one shard."""
    return zlib.crc32(account_id.encode()) % num_shards


def record_batch(result: BatchResult, gauges: dict[str, float]) -> None:
    """The metrics of one completed batch (called on the bundle thread, so Beam records them)."""
    out = result.outcome
    events = len(result.batch)
    _BATCHES.inc()
    _BATCH_SIZE.observe(events)
    _RETRIES.inc(max(0, out.attempts - 1))
    _THROTTLED_MS.inc(int(out.throttled_s * 1000))
    (_EVENTS_SCORED if out.ok else _SCORE_DEAD_LETTERS).inc(events)
    for reason, latency in zip(out.reasons, out.latencies_s):
        _REQUESTS.inc(outcome=outcome_bucket(reason))
        _REQUEST_LATENCY_MS.observe(latency * 1000)
    set_gauges(gauges)


def _emit(result: BatchResult) -> Iterator[tuple[ScoredEvent | DeadLetter, int]]:
    """(output, Kafka timestamp in ms of the event it came from)."""
    out = result.outcome
    if out.ok:
        outputs = scored_events(result.batch, out.value, result.elapsed_s * 1000, out.attempts)
    else:
        outputs = dead_letters(result.batch, out.error or "scoring failed", out.attempts, out.last_status)
    for output, parsed in zip(outputs, result.batch):
        yield output, parsed.timestamp_ms


class ScoreBatchesFn(beam.DoFn):
    """Stateful per shard: state holds at most one open batch."""

    BUFFER = BagStateSpec("buffer", PickleCoder())
    SIZE = ReadModifyWriteStateSpec("size", TupleCoder((VarIntCoder(), VarIntCoder())))
    END_OF_WINDOW = TimerSpec("end_of_window", TimeDomain.WATERMARK)

    def __init__(self, config: ScoringConfig, policy: BatchPolicy,
                 monitoring: MonitoringConfig | None = None,
                 runtime_factory: RuntimeFactory = shared_runtime) -> None:
        self._config = config
        self._policy = policy
        self._monitoring = monitoring
        self._runtime_factory = runtime_factory
        self._runtime: Runtime | None = None
        self._pending: deque[Future[BatchResult]] = deque()

    def setup(self) -> None:
        self._runtime = self._runtime_factory(self._config)
        if self._monitoring is not None:
            # Imported here: the Google client libraries load only when export is on.
            from transforms.monitoring.exporter import ensure_exporter
            ensure_exporter(self._monitoring)  # once per worker process; exports while the job runs

    def start_bundle(self) -> None:
        self._pending = deque()

    def process(self, element: tuple[int, ParsedEvent | DeadLetter],
                buffer=beam.DoFn.StateParam(BUFFER), size=beam.DoFn.StateParam(SIZE),
                end_of_window=beam.DoFn.TimerParam(END_OF_WINDOW),
                window=beam.DoFn.WindowParam) -> Iterator[object]:
        shard, parsed = element
        if isinstance(parsed, DeadLetter):
            yield parsed   # an earlier stage's dead letter travels on to the writer
            return
        count, nbytes = size.read() or (0, 0)
        item_bytes = len(parsed.raw)
        if not self._policy.fits(count, nbytes, item_bytes):
            self._submit(buffer, shard)
            count, nbytes = 0, 0
        if count == 0:
            end_of_window.set(window.max_timestamp())
        buffer.add(parsed)
        count, nbytes = count + 1, nbytes + item_bytes
        if self._policy.full(count, nbytes):
            self._submit(buffer, shard)
            size.clear()
        else:
            size.write((count, nbytes))
        yield from self._completed(block=False)

    @on_timer(END_OF_WINDOW)
    def on_end_of_window(self, shard=beam.DoFn.KeyParam, buffer=beam.DoFn.StateParam(BUFFER),
                         size=beam.DoFn.StateParam(SIZE)) -> Iterator[object]:
        yield from self._flush(shard, buffer, size)

    def _flush(self, shard: int, buffer, size) -> Iterator[object]:
        if size.read():
            self._submit(buffer, shard)
            size.clear()
        yield from self._completed(block=False)

    def _submit(self, buffer, shard: int) -> None:
        batch: list[ParsedEvent] = list(buffer.read())
        buffer.clear()
        if batch:
            assert self._runtime is not None
            self._pending.append(self._runtime.submit(batch, shard))

    def _completed(self, block: bool) -> Iterator[object]:
        for value, _ in self._completed_with_timestamps(block):
            yield value

    def _completed_with_timestamps(self, block: bool) -> Iterator[tuple[object, int]]:
        while self._pending and (block or self._pending[0].done()):
            result = self._pending.popleft().result()
            assert self._runtime is not None
            record_batch(result, self._runtime.gauges())
            yield from _emit(result)

    def finish_bundle(self) -> Iterable[object]:
        """Waits for every batch still in flight: nothing outlives its bundle."""
        for value, ts_ms in self._completed_with_timestamps(block=True):
            yield WindowedValue(value, Timestamp(micros=ts_ms * 1000), [GlobalWindow()])


class ScoreBatchesStreamingFn(ScoreBatchesFn):
    """Adds the `max_wait_s` age bound with a processing-time timer (streaming only:
    on the local batch runners a REAL_TIME timer is unreliable)."""

    MAX_WAIT = TimerSpec("max_wait", TimeDomain.REAL_TIME)

    def process(self, element, buffer=beam.DoFn.StateParam(ScoreBatchesFn.BUFFER),
                size=beam.DoFn.StateParam(ScoreBatchesFn.SIZE),
                end_of_window=beam.DoFn.TimerParam(ScoreBatchesFn.END_OF_WINDOW),
                max_wait=beam.DoFn.TimerParam(MAX_WAIT), window=beam.DoFn.WindowParam):
        count, _ = size.read() or (0, 0)
        if count == 0 and self._policy.max_wait_s:
            max_wait.set(Timestamp.now() + self._policy.max_wait_s)
        yield from super().process(element, buffer, size, end_of_window, window)

    @on_timer(MAX_WAIT)
    def on_max_wait(self, shard=beam.DoFn.KeyParam, buffer=beam.DoFn.StateParam(ScoreBatchesFn.BUFFER),
                    size=beam.DoFn.StateParam(ScoreBatchesFn.SIZE)):
        yield from self._flush(shard, buffer, size)


def shard_key(item: ParsedEvent | DeadLetter, num_shards: int) -> int:
    if isinstance(item, DeadLetter):
        return item.source.partition % num_shards
    return shard_of(item.event.account_id, num_shards)


class ScoreInBatches(beam.PTransform):
    """ParsedEvent -> ScoredEvent | DeadLetter; dead letters from earlier stages pass through.

    One output PCollection (no tagged outputs): see transforms/parse.py for why.
    """

    def __init__(self, config: ScoringConfig, policy: BatchPolicy, num_shards: int, streaming: bool = False,
                 monitoring: MonitoringConfig | None = None,
                 runtime_factory: RuntimeFactory = shared_runtime) -> None:
        """`runtime_factory(config)` gives each DoFn instance its runtime; the default shares one
        per process and configuration (tests pass a fake)."""
        super().__init__()
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self._config, self._policy, self._num_shards = config, policy, num_shards
        self._streaming = streaming
        self._monitoring = monitoring
        self._runtime_factory = runtime_factory

    def expand(self, events):
        n = self._num_shards
        fn = ScoreBatchesStreamingFn if self._streaming else ScoreBatchesFn
        return (events
                | "KeyByShard" >> beam.Map(lambda item: (shard_key(item, n), item))
                .with_output_types(tuple[int, Any])
                | "ScoreBatches" >> beam.ParDo(fn(self._config, self._policy, self._monitoring,
                                                  self._runtime_factory)))
