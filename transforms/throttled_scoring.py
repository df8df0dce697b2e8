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
from concurrent.futures import Future
from typing import Any, Deque, Iterable, Iterator, List, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.coders import PickleCoder, TupleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.control.batching import BatchPolicy
from transforms.events import ParsedEvent
from transforms.monitoring.config import MonitoringConfig
from transforms.outputs import DeadLetter, ScoredEvent
from transforms.scoring_runtime import BatchResult, ScoringConfig, ScoringRuntime, shared_runtime
from transforms.telemetry import TELEMETRY

NAMESPACE = "enrich"
REQUEST_OUTCOMES = ("ok", "429", "5xx", "timeout", "connection_error", "other")


def shard_of(account_id: str, num_shards: int) -> int:
    """Stable across processes (unlike hash()), so one account always lands in one shard."""
    return zlib.crc32(account_id.encode()) % num_shards


class _ScoringMetrics:
    """Beam metrics for the summary, mirrored into TELEMETRY for live export."""

    def __init__(self) -> None:
        c = lambda name: Metrics.counter(NAMESPACE, name)  # noqa: E731
        self.batches, self.events_scored, self.dead_letters = c("batches"), c("events_scored"), c("score_dead_letters")
        self.retries, self.throttled_ms = c("retries"), c("throttled_ms")
        self.attempts = {k: c(f"requests_{k}") for k in REQUEST_OUTCOMES}
        self.batch_size = Metrics.distribution(NAMESPACE, "batch_size")
        self.latency_ms = Metrics.distribution(NAMESPACE, "request_latency_ms")
        self.rate = Metrics.gauge(NAMESPACE, "rate_limit_rps")
        self.in_flight = Metrics.gauge(NAMESPACE, "in_flight")
        self.in_flight_limit = Metrics.gauge(NAMESPACE, "in_flight_limit")

    def record(self, result: BatchResult, runtime: ScoringRuntime) -> None:
        out = result.outcome
        events = len(result.batch)
        retries = max(0, out.attempts - 1)
        throttled_ms = int(out.throttled_s * 1000)
        scored_name = "events_scored" if out.ok else "score_dead_letters"
        self.batches.inc()
        self.batch_size.update(events)
        self.retries.inc(retries)
        self.throttled_ms.inc(throttled_ms)
        (self.events_scored if out.ok else self.dead_letters).inc(events)
        TELEMETRY.inc("batches")
        TELEMETRY.observe("batch_size", events)
        TELEMETRY.inc("retries", retries)
        TELEMETRY.inc("throttled_ms", throttled_ms)
        TELEMETRY.inc(scored_name, events)
        for reason, latency in zip(out.reasons, out.latencies_s):
            outcome = _reason_bucket(reason)
            self.attempts[outcome].inc()
            self.latency_ms.update(int(latency * 1000))
            TELEMETRY.inc("requests", outcome=outcome)
            TELEMETRY.observe("request_latency_ms", latency * 1000)
        throttle = runtime.throttle
        for gauge, value in ((self.rate, throttle.controller.rate),
                             (self.in_flight, throttle.inflight.in_flight),
                             (self.in_flight_limit, throttle.inflight.limit)):
            gauge.set(int(value))


def _reason_bucket(reason: str) -> str:
    if reason == "ok" or reason in ("timeout", "connection_error"):
        return reason
    if reason == "http_429":
        return "429"
    if reason.startswith("http_5"):
        return "5xx"
    return "other"


def _emit(result: BatchResult) -> Iterator[Tuple[Union[ScoredEvent, DeadLetter], int]]:
    """(output, Kafka timestamp in ms of the event it came from)."""
    out = result.outcome
    if out.ok:
        latency_ms = result.elapsed_s * 1000
        for parsed, scored in zip(result.batch, out.value):
            yield ScoredEvent(parsed, float(scored["score"]), str(scored["decision"]),
                              str(scored.get("model_version", "")), latency_ms, out.attempts), parsed.timestamp_ms
        return
    for parsed in result.batch:
        yield DeadLetter(reason=out.error or "scoring failed", stage="score", payload=parsed.raw,
                         source=parsed.source, txn_id=parsed.event.txn_id, attempts=out.attempts,
                         last_status=out.last_status), parsed.timestamp_ms


class ScoreBatchesFn(beam.DoFn):
    """Stateful per shard: state holds at most one open batch."""

    BUFFER = BagStateSpec("buffer", PickleCoder())
    SIZE = ReadModifyWriteStateSpec("size", TupleCoder((VarIntCoder(), VarIntCoder())))
    END_OF_WINDOW = TimerSpec("end_of_window", TimeDomain.WATERMARK)

    def __init__(self, config: ScoringConfig, policy: BatchPolicy,
                 monitoring: Optional[MonitoringConfig] = None) -> None:
        self._config = config
        self._policy = policy
        self._monitoring = monitoring
        self._runtime: Optional[ScoringRuntime] = None
        self._pending: Deque["Future[BatchResult]"] = deque()

    def setup(self) -> None:
        self._runtime = shared_runtime(self._config)
        self._metrics = _ScoringMetrics()
        if self._monitoring is not None:
            # Imported here: the Google client libraries load only when export is on.
            from transforms.monitoring.exporter import ensure_exporter
            ensure_exporter(self._monitoring)  # once per worker process; exports while the job runs

    def start_bundle(self) -> None:
        self._pending = deque()

    def process(self, element: Tuple[int, Union[ParsedEvent, DeadLetter]],
                buffer=beam.DoFn.StateParam(BUFFER), size=beam.DoFn.StateParam(SIZE),
                end_of_window=beam.DoFn.TimerParam(END_OF_WINDOW),
                window=beam.DoFn.WindowParam) -> Iterator[object]:
        _, parsed = element
        if isinstance(parsed, DeadLetter):
            yield parsed   # an earlier stage's dead letter travels on to the writer
            return
        count, nbytes = size.read() or (0, 0)
        item_bytes = len(parsed.raw)
        if not self._policy.fits(count, nbytes, item_bytes):
            self._submit(buffer)
            count, nbytes = 0, 0
        if count == 0:
            end_of_window.set(window.max_timestamp())
        buffer.add(parsed)
        count, nbytes = count + 1, nbytes + item_bytes
        if self._policy.full(count, nbytes):
            self._submit(buffer)
            size.clear()
        else:
            size.write((count, nbytes))
        yield from self._completed(block=False)

    @on_timer(END_OF_WINDOW)
    def on_end_of_window(self, buffer=beam.DoFn.StateParam(BUFFER),
                         size=beam.DoFn.StateParam(SIZE)) -> Iterator[object]:
        yield from self._flush(buffer, size)

    def _flush(self, buffer, size) -> Iterator[object]:
        if size.read():
            self._submit(buffer)
            size.clear()
        yield from self._completed(block=False)

    def _submit(self, buffer) -> None:
        batch: List[ParsedEvent] = list(buffer.read())
        buffer.clear()
        if batch:
            assert self._runtime is not None
            self._pending.append(self._runtime.submit(batch))

    def _completed(self, block: bool) -> Iterator[object]:
        for value, _ in self._completed_with_timestamps(block):
            yield value

    def _completed_with_timestamps(self, block: bool) -> Iterator[Tuple[object, int]]:
        while self._pending and (block or self._pending[0].done()):
            result = self._pending.popleft().result()
            assert self._runtime is not None
            self._metrics.record(result, self._runtime)
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
    def on_max_wait(self, buffer=beam.DoFn.StateParam(ScoreBatchesFn.BUFFER),
                    size=beam.DoFn.StateParam(ScoreBatchesFn.SIZE)):
        yield from self._flush(buffer, size)


def shard_key(item: Union[ParsedEvent, DeadLetter], num_shards: int) -> int:
    if isinstance(item, DeadLetter):
        return item.source.partition % num_shards
    return shard_of(item.event.account_id, num_shards)


class ScoreInBatches(beam.PTransform):
    """ParsedEvent -> ScoredEvent | DeadLetter; dead letters from earlier stages pass through.

    One output PCollection (no tagged outputs): see transforms/parse.py for why.
    """

    def __init__(self, config: ScoringConfig, policy: BatchPolicy, num_shards: int, streaming: bool = False,
                 monitoring: Optional[MonitoringConfig] = None) -> None:
        super().__init__()
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self._config, self._policy, self._num_shards = config, policy, num_shards
        self._streaming = streaming
        self._monitoring = monitoring

    def expand(self, events):
        n = self._num_shards
        fn = ScoreBatchesStreamingFn if self._streaming else ScoreBatchesFn
        return (events
                | "KeyByShard" >> beam.Map(lambda item: (shard_key(item, n), item))
                .with_output_types(Tuple[int, Any])
                | "ScoreBatches" >> beam.ParDo(fn(self._config, self._policy, self._monitoring)))
