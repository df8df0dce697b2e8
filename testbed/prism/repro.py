"""Reproduce (or rule out) element loss in stateful stages on Prism, without Kafka or project code.

    python -m testbed.prism.repro --runner prism|fnapi --runs N [--shape SHAPE] [options]
    python -m testbed.prism.repro --runner prism --probe finalizer|sdf [--runs N]

The pipeline is Create(N keyed elements over K keys) -> Reshuffle -> <shape> -> a
sink fused after it. Shapes:

  bag           BagState batch + ReadModifyWrite size + end-of-window timer, flush at
                --batch, sleeping --stall_s on --stalls elements (the project's
                ScoreBatchesFn reduced to its state handling)
  bag-nostall   the same without the sleeps
  memory-keyed  open batches only in DoFn instance memory, every tail flushed in
                finish_bundle; still stateful (one declared, never used,
                ReadModifyWriteState) so the runner keeps key routing; same sleeps
  memory-plain  the same in a plain DoFn (no state at all)
  bag-reshuffle the bag batcher without sleeps, then a Reshuffle, then a plain DoFn
                that sleeps on the batches holding the stall elements
  rmw           a per-key count in ReadModifyWriteState emitted by an end-of-window
                timer, same sleeps (the offset committer's read-modify-write pattern)

Each run is a fresh Python process (`--one_run`, LOOPBACK worker in that process). It
records what the sink saw, a trace of every bundle the shape's DoFn ran (Prism's
instruction id, keys, what state it read, its open batches at finish) and every
split the SDK answered (BundleProcessor.try_split is wrapped). With
--prism_log_level the Prism binary runs through a generated wrapper that adds
--log_level/--log_kind=json (the 2.62 SDK has no such pipeline option) and its log
is kept per run.

Probes:
  finalizer     which DoFns get their BundleFinalizerParam callbacks run: a stateful
                DoFn heading its own stage (after a keying Map, like the offset
                committer), a plain DoFn fused after it, a plain DoFn heading a stage
  sdf           an unbounded splittable DoFn (OffsetRestrictionTracker over
                [0, 2**63-1), self-checkpointing, sleeping once): does the runner
                split it, at which fraction, where does the residual start

Prints one line per run and a one-line VERDICT; exit status 1 when any run lost
(or, for a probe, when a finalizer never ran / the SDF was split), 2 on errors.
Run artefacts (results, traces, Prism logs) stay under --work_dir.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

REPO_ROOT = Path(__file__).resolve().parents[2]
SHAPES = ("bag", "bag-nostall", "memory-keyed", "memory-plain", "bag-reshuffle", "rmw")
PROBES = ("finalizer", "sdf")
UNBOUNDED_STOP = 2 ** 63 - 1

# ---------------------------------------------------------------------------
# Trace: JSON lines appended by the DoFns (LOOPBACK: same process as the driver).
# ---------------------------------------------------------------------------
_LOCK = threading.Lock()
_FILES: dict[str, Any] = {}


def _write(path: str, record: dict) -> None:
    record.setdefault("t", time.monotonic())
    line = json.dumps(record, sort_keys=True) + "\n"
    with _LOCK:
        f = _FILES.get(path)
        if f is None:
            f = _FILES[path] = open(path, "a", buffering=1)
        f.write(line)


def _instruction_id() -> str:
    """The runner's bundle (instruction) id: Prism's bundle id, e.g. inst012."""
    from apache_beam.runners.worker import statesampler
    try:
        return str(statesampler.get_current_instruction_id() or "?")
    except Exception:  # pragma: no cover - SDK internals
        return "?"


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _patch_split_logging(trace: str) -> None:
    """Record every split the SDK answers (request and channel split)."""
    from apache_beam.runners.worker import bundle_processor
    original = bundle_processor.BundleProcessor.try_split

    def try_split(self, request):
        response = original(self, request)
        for transform_id, desired in request.desired_splits.items():
            channel = [dict(transform=c.transform_id, last_primary=c.last_primary_element,
                            first_residual=c.first_residual_element)
                       for c in response.channel_splits]
            _write(trace, dict(ev="split", inst=request.instruction_id, input=transform_id,
                               fraction=desired.fraction_of_remainder,
                               estimated=desired.estimated_input_elements, channel=channel,
                               residual_roots=len(response.residual_roots),
                               primary_roots=len(response.primary_roots)))
        return response

    bundle_processor.BundleProcessor.try_split = try_split


# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------
class Params:
    def __init__(self, elements: int, keys: int, batch: int, stalls: int, stall_s: float, trace: str) -> None:
        self.elements, self.keys, self.batch = elements, keys, batch
        self.stall_s = stall_s
        self.stall_ids = sorted({elements * j // max(stalls, 1) + elements // (2 * max(stalls, 1))
                                 for j in range(stalls)}) if stalls else []
        self.trace = trace

    def stall(self, element_id: int) -> None:
        if element_id in self.stall_ids and self.stall_s > 0:
            time.sleep(self.stall_s)


def _batch_record(key, ids: list[int], why: str) -> dict:
    return dict(key=key, ids=list(ids), why=why, inst=_instruction_id())


class BagBatchFn(beam.DoFn):
    """ScoreBatchesFn's state handling: one open batch per key in BagState."""
    BUFFER = BagStateSpec("buffer", VarIntCoder())
    SIZE = ReadModifyWriteStateSpec("size", VarIntCoder())
    END_OF_WINDOW = TimerSpec("end_of_window", TimeDomain.WATERMARK)

    def __init__(self, params: Params, stall: bool) -> None:
        self._p, self._stall = params, stall

    def start_bundle(self) -> None:
        self._inst = None
        self._open: dict[Any, list[int]] = {}   # instrumentation only: what this bundle believes is open

    def _begin(self) -> None:
        if self._inst is None:
            self._inst = _instruction_id()
            _write(self._p.trace, dict(ev="start", inst=self._inst, fn="bag"))

    def process(self, element, buffer=beam.DoFn.StateParam(BUFFER), size=beam.DoFn.StateParam(SIZE),
                end_of_window=beam.DoFn.TimerParam(END_OF_WINDOW), window=beam.DoFn.WindowParam):
        self._begin()
        key, element_id = element
        count = size.read() or 0
        if key not in self._open:
            seen = list(buffer.read())
            _write(self._p.trace, dict(ev="first_touch", inst=self._inst, key=key, size=count, bag=seen))
            self._open[key] = seen
        _write(self._p.trace, dict(ev="el", inst=self._inst, key=key, id=element_id, size=count))
        if self._stall:
            self._p.stall(element_id)
        if count == 0:
            end_of_window.set(window.max_timestamp())
            self._open[key] = []
        buffer.add(element_id)
        self._open[key].append(element_id)
        count += 1
        if count >= self._p.batch:
            ids = list(buffer.read())
            buffer.clear()
            size.clear()
            self._open[key] = []
            yield _batch_record(key, ids, "size")
        else:
            size.write(count)

    @on_timer(END_OF_WINDOW)
    def on_end_of_window(self, key=beam.DoFn.KeyParam, buffer=beam.DoFn.StateParam(BUFFER),
                         size=beam.DoFn.StateParam(SIZE)):
        self._begin()
        ids = list(buffer.read())
        _write(self._p.trace, dict(ev="timer", inst=self._inst, key=key, size=size.read() or 0, ids=ids))
        buffer.clear()
        size.clear()
        self._open[key] = []
        if ids:
            yield _batch_record(key, ids, "timer")

    def finish_bundle(self):
        if self._inst is not None:
            _write(self._p.trace, dict(ev="finish", inst=self._inst, fn="bag",
                                       open={str(k): v for k, v in self._open.items() if v}))


class MemoryBatchMixin:
    """Open batches only in instance memory; every tail leaves in finish_bundle."""

    def _setup_bundle(self, fn: str) -> None:
        self._inst = None
        self._fn = fn
        self._open: dict[Any, list[int]] = {}

    def _add(self, element) -> Iterator[dict]:
        if self._inst is None:
            self._inst = _instruction_id()
            _write(self._p.trace, dict(ev="start", inst=self._inst, fn=self._fn))
        key, element_id = element
        _write(self._p.trace, dict(ev="el", inst=self._inst, key=key, id=element_id))
        self._p.stall(element_id)
        batch = self._open.setdefault(key, [])
        batch.append(element_id)
        if len(batch) >= self._p.batch:
            del self._open[key]
            yield _batch_record(key, batch, "size")

    def _finish(self) -> Iterator[WindowedValue]:
        if self._inst is not None:
            _write(self._p.trace, dict(ev="finish", inst=self._inst, fn=self._fn,
                                       open={str(k): v for k, v in self._open.items() if v}))
        for key, ids in self._open.items():
            rec = _batch_record(key, ids, "finish_bundle")
            yield WindowedValue(rec, GlobalWindow().max_timestamp(), [GlobalWindow()])
        self._open = {}


class MemoryKeyedBatchFn(MemoryBatchMixin, beam.DoFn):
    """Stateful only by declaration: the unused state keeps the stage keyed."""
    UNUSED = ReadModifyWriteStateSpec("unused", VarIntCoder())

    def __init__(self, params: Params) -> None:
        self._p = params

    def start_bundle(self) -> None:
        self._setup_bundle("memory-keyed")

    def process(self, element, unused=beam.DoFn.StateParam(UNUSED)):
        yield from self._add(element)

    def finish_bundle(self):
        yield from self._finish()


class MemoryPlainBatchFn(MemoryBatchMixin, beam.DoFn):
    def __init__(self, params: Params) -> None:
        self._p = params

    def start_bundle(self) -> None:
        self._setup_bundle("memory-plain")

    def process(self, element):
        yield from self._add(element)

    def finish_bundle(self):
        yield from self._finish()


class SlowScoreFn(beam.DoFn):
    """After a Reshuffle: a plain DoFn that sleeps on batches holding a stall element."""

    def __init__(self, params: Params) -> None:
        self._p = params

    def process(self, record):
        for element_id in record["ids"]:
            self._p.stall(element_id)
        yield record


class RmwCountFn(beam.DoFn):
    """A per-key count in ReadModifyWriteState, emitted by an end-of-window timer."""
    COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())
    END_OF_WINDOW = TimerSpec("end_of_window", TimeDomain.WATERMARK)

    def __init__(self, params: Params) -> None:
        self._p = params

    def start_bundle(self) -> None:
        self._inst = None

    def process(self, element, count=beam.DoFn.StateParam(COUNT),
                end_of_window=beam.DoFn.TimerParam(END_OF_WINDOW), window=beam.DoFn.WindowParam):
        if self._inst is None:
            self._inst = _instruction_id()
            _write(self._p.trace, dict(ev="start", inst=self._inst, fn="rmw"))
        key, element_id = element
        seen = count.read() or 0
        _write(self._p.trace, dict(ev="el", inst=self._inst, key=key, id=element_id, size=seen))
        self._p.stall(element_id)
        if seen == 0:
            end_of_window.set(window.max_timestamp())
        count.write(seen + 1)
        return []

    @on_timer(END_OF_WINDOW)
    def on_end_of_window(self, key=beam.DoFn.KeyParam, count=beam.DoFn.StateParam(COUNT)):
        n = count.read() or 0
        _write(self._p.trace, dict(ev="timer", inst=_instruction_id(), key=key, size=n))
        count.clear()
        yield dict(key=key, count=n, why="timer", inst=_instruction_id())


class SinkFn(beam.DoFn):
    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, record):
        _write(self._path, record)
        return []


def build_shape(p: beam.Pipeline, shape: str, params: Params, sink_path: str) -> None:
    keyed = (p
             | "Create" >> beam.Create([(i % params.keys, i) for i in range(params.elements)])
             | "Reshuffle" >> beam.Reshuffle())
    if shape == "bag":
        out = keyed | "Batch" >> beam.ParDo(BagBatchFn(params, stall=True))
    elif shape == "bag-nostall":
        out = keyed | "Batch" >> beam.ParDo(BagBatchFn(params, stall=False))
    elif shape == "memory-keyed":
        out = keyed | "Batch" >> beam.ParDo(MemoryKeyedBatchFn(params))
    elif shape == "memory-plain":
        out = keyed | "Batch" >> beam.ParDo(MemoryPlainBatchFn(params))
    elif shape == "bag-reshuffle":
        out = (keyed
               | "Batch" >> beam.ParDo(BagBatchFn(params, stall=False))
               | "ReshuffleBatches" >> beam.Reshuffle()
               | "Score" >> beam.ParDo(SlowScoreFn(params)))
    elif shape == "rmw":
        out = keyed | "Count" >> beam.ParDo(RmwCountFn(params))
    else:
        raise ValueError(shape)
    _ = out | "Sink" >> beam.ParDo(SinkFn(sink_path))


# ---------------------------------------------------------------------------
# Probe: bundle finalizers
# ---------------------------------------------------------------------------
FINALIZER_CASES = ("stateful-head", "plain-fused-after-stateful", "plain-head", "plain-fused-after-map")


class FinalizingStatefulFn(beam.DoFn):
    """Like the streaming offset committer: keyed RMW state, a finalizer registered per bundle.
    Sleeps on the stall elements so that Prism splits its bundles."""
    PENDING = ReadModifyWriteStateSpec("pending", VarIntCoder())

    def __init__(self, params: Params) -> None:
        self._p = params

    def start_bundle(self) -> None:
        self._registered = False

    def process(self, keyed, finalizer=beam.DoFn.BundleFinalizerParam,
                pending=beam.DoFn.StateParam(PENDING)):
        key, value = keyed
        pending.write((pending.read() or 0) + 1)
        if not self._registered:
            self._registered = True
            inst, trace = _instruction_id(), self._p.trace
            _write(trace, dict(ev="registered", fn="stateful-head", inst=inst))
            finalizer.register(lambda: _write(trace, dict(ev="finalized", fn="stateful-head", inst=inst)))
        self._p.stall(value)
        yield value


class FinalizingPlainFn(beam.DoFn):
    def __init__(self, params: Params, name: str, stall: bool = False) -> None:
        self._p, self._name, self._stall = params, name, stall

    def start_bundle(self) -> None:
        self._registered = False

    def process(self, value, finalizer=beam.DoFn.BundleFinalizerParam):
        if not self._registered:
            self._registered = True
            inst, name, trace = _instruction_id(), self._name, self._p.trace
            _write(trace, dict(ev="registered", fn=name, inst=inst))
            finalizer.register(lambda: _write(trace, dict(ev="finalized", fn=name, inst=inst)))
        if self._stall:
            self._p.stall(value)
        yield value


def build_finalizer_probe(p: beam.Pipeline, params: Params) -> None:
    items = (p
             | "Create" >> beam.Create(list(range(params.elements)))
             | "Reshuffle" >> beam.Reshuffle())
    # stateful-head, plain-fused-after-stateful: keying Map -> stateful DoFn with a finalizer
    # (heads its stage, like CommitOffsets) -> plain DoFn with a finalizer fused after it.
    (items
     | "KeyByPartition" >> beam.Map(lambda i: (f"topic/{i % 4}", i)).with_output_types(tuple[str, int])
     | "StatefulHead" >> beam.ParDo(FinalizingStatefulFn(params))
     | "PlainFusedAfterStateful" >> beam.ParDo(FinalizingPlainFn(params, "plain-fused-after-stateful")))
    # plain-head: a plain DoFn with a finalizer heading a stage (right after a Reshuffle).
    (items
     | "Reshuffle2" >> beam.Reshuffle()
     | "PlainHead" >> beam.ParDo(FinalizingPlainFn(params, "plain-head", stall=True)))
    # plain-fused-after-map: a Map without finalizer heads the stage, the finalizing DoFn is fused after it.
    (items
     | "Reshuffle3" >> beam.Reshuffle()
     | "HeadMap" >> beam.Map(lambda i: i)
     | "PlainFusedAfterMap" >> beam.ParDo(FinalizingPlainFn(params, "plain-fused-after-map")))


# ---------------------------------------------------------------------------
# Probe: unbounded SDF splits
# ---------------------------------------------------------------------------
class LoggingTracker(OffsetRestrictionTracker):
    """Records every split the SDK asks of the restriction (fraction, result)."""

    def try_split(self, fraction_of_remainder):
        before = self.current_restriction()
        result = super().try_split(fraction_of_remainder)
        _write(os.environ[SDF_TRACE_ENV], dict(
            ev="tracker_split", fraction=fraction_of_remainder, before=[before.start, before.stop],
            last_claim=self._last_claim_attempt,
            primary=[result[0].start, result[0].stop] if result else None,
            residual=[result[1].start, result[1].stop] if result else None))
        return result


SDF_TRACE_ENV = "PRISM_REPRO_SDF_TRACE"  # set by the child process (LOOPBACK: same process)


class UnboundedRestrictions(RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(0, UNBOUNDED_STOP)

    def create_tracker(self, restriction):
        return LoggingTracker(restriction)

    def split(self, element, restriction):
        yield restriction  # never pre-split, like the Kafka partition reader

    def restriction_size(self, element, restriction):
        return max(0, min(restriction.stop, 10_000) - restriction.start)


class UnboundedCounterFn(beam.DoFn):
    """Claims 0, 1, 2, ...; self-checkpoints every `per_call`; sleeps at `stall_at`; ends at `limit`."""

    def __init__(self, limit: int, per_call: int, stall_at: int, stall_s: float) -> None:
        self._limit, self._per_call = limit, per_call
        self._stall_at, self._stall_s = stall_at, stall_s

    @beam.DoFn.unbounded_per_element()
    def process(self, element, tracker=beam.DoFn.RestrictionParam(UnboundedRestrictions())):
        trace = os.environ[SDF_TRACE_ENV]
        r = tracker.current_restriction()
        _write(trace, dict(ev="call", inst=_instruction_id(), start=r.start, stop=r.stop))
        pos, claimed = r.start, 0
        while True:
            if pos >= self._limit:
                tracker.try_claim(tracker.current_restriction().stop)  # claim the end: done
                _write(trace, dict(ev="end", inst=_instruction_id(), at=pos))
                return
            if claimed >= self._per_call:
                tracker.defer_remainder()
                _write(trace, dict(ev="checkpoint", inst=_instruction_id(), at=pos))
                return
            if not tracker.try_claim(pos):
                cur = tracker.current_restriction()
                _write(trace, dict(ev="stopped", inst=_instruction_id(), at=pos, restriction=[cur.start, cur.stop]))
                return
            if pos == self._stall_at:
                time.sleep(self._stall_s)
            yield pos
            pos += 1
            claimed += 1


def build_sdf_probe(p: beam.Pipeline, trace: str, sink: str, limit: int, stall_s: float) -> None:
    os.environ[SDF_TRACE_ENV] = trace
    (p
     | "Impulse" >> beam.Create(["partition-0"])
     | "Read" >> beam.ParDo(UnboundedCounterFn(limit=limit, per_call=limit // 4, stall_at=limit // 8,
                                               stall_s=stall_s))
     | "Sink" >> beam.ParDo(SinkPosFn(sink)))


class SinkPosFn(beam.DoFn):
    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, pos):
        _write(self._path, dict(pos=pos))
        return []


# ---------------------------------------------------------------------------
# One run (child process)
# ---------------------------------------------------------------------------
def _prism_wrapper(binary: Path, run_dir: Path, level: str) -> Path:
    """A shell script that runs Prism with a log level and JSON logs into the run dir."""
    wrapper = run_dir / "prism-debug.sh"
    log = run_dir / "prism.log"
    wrapper.write_text("#!/bin/sh\n"
                       f"exec '{binary}' --log_level={level} --log_kind=json \"$@\" 2>>'{log}'\n")
    wrapper.chmod(0o755)
    return wrapper


def runner_args(args: argparse.Namespace, run_dir: Path) -> list[str]:
    if args.runner == "fnapi":
        return ["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"]
    binary = Path(args.prism_location) if args.prism_location else None
    if binary is None:
        from testbed.prism import runner as prism_runner
        binary = prism_runner.build()
    native = []
    if args.prism_log_level:
        binary = _prism_wrapper(binary.resolve(), run_dir, args.prism_log_level)
        if _sdk_has_prism_log_options():
            # Newer SDKs pass --log_level/--log_kind themselves, after the wrapper's: use their options.
            native = [f"--prism_log_level={args.prism_log_level}", "--prism_log_kind=json"]
    return ["--runner=PrismRunner", f"--prism_location={binary}", "--environment_type=LOOPBACK", *native]


def _sdk_has_prism_log_options() -> bool:
    from apache_beam.options.pipeline_options import PrismRunnerOptions
    return "prism_log_level" in PrismRunnerOptions([]).get_all_options()


def one_run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trace, sink = str(run_dir / "trace.jsonl"), str(run_dir / "sink.jsonl")
    _patch_split_logging(trace)
    extra = (["--streaming"] if args.streaming else []) + [f"--experiments={e}" for e in args.experiment]
    options = PipelineOptions(runner_args(args, run_dir) + extra)
    started = time.monotonic()
    params = Params(args.elements, args.keys, args.batch, args.stalls, args.stall_s, trace)
    with beam.Pipeline(options=options) as p:
        if args.probe == "finalizer":
            build_finalizer_probe(p, params)
        elif args.probe == "sdf":
            build_sdf_probe(p, trace, sink, limit=args.elements, stall_s=args.stall_s)
        else:
            build_shape(p, args.shape, params, sink)
    elapsed = time.monotonic() - started
    with _LOCK:
        for f in _FILES.values():
            f.flush()
    if args.probe == "finalizer":
        result = analyse_finalizer(_read(Path(trace)))
    elif args.probe == "sdf":
        result = analyse_sdf(_read(Path(trace)), _read(Path(sink)), args.elements)
    else:
        result = analyse_shape(args.shape, params, _read(Path(trace)), _read(Path(sink)))
    result["elapsed_s"] = round(elapsed, 2)
    prism_log = run_dir / "prism.log"
    if prism_log.exists():
        result["prism_log"] = analyse_prism_log(prism_log)
    (run_dir / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


# ---------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------
def analyse_shape(shape: str, params: Params, trace: list[dict], sink: list[dict]) -> dict:
    expected = params.elements
    splits = [t for t in trace if t["ev"] == "split"]
    split_done = [s for s in splits if s["channel"]]
    shape_bundles = {t["inst"] for t in trace if t["ev"] == "start"}
    in_shape = sum(1 for s in split_done if s["inst"] in shape_bundles)
    if shape == "rmw":
        emitted = sum(r["count"] for r in sink)
        return dict(expected=expected, emitted=emitted, unique=emitted, duplicates=0, missing=[],
                    splits_requested=len(splits), splits_answered=len(split_done), shape_stage_splits=in_shape,
                    bundles=len(shape_bundles), same_key_overlaps=_same_key_overlaps(trace),
                    explain=_explain_rmw(trace, split_done))
    ids = Counter(i for r in sink for i in r["ids"])
    missing = sorted(set(range(expected)) - set(ids))
    result = dict(expected=expected, emitted=sum(ids.values()), unique=len(ids),
                  duplicates=sum(c - 1 for c in ids.values() if c > 1), missing=missing,
                  splits_requested=len(splits), splits_answered=len(split_done), shape_stage_splits=in_shape,
                  bundles=len(shape_bundles), same_key_overlaps=_same_key_overlaps(trace),
                  batches=Counter(r["why"] for r in sink))
    if missing:
        result["explain"] = _explain_missing(missing, trace, split_done)
    return result


def _same_key_overlaps(trace: list[dict]) -> int:
    """Pairs of bundles that processed elements of the same key during overlapping times."""
    spans: dict[str, list[float]] = {}
    keys = defaultdict(set)
    for t in trace:
        if t["ev"] == "el":
            s = spans.setdefault(t["inst"], [t["t"], t["t"]])
            s[0], s[1] = min(s[0], t["t"]), max(s[1], t["t"])
            keys[t["inst"]].add(t["key"])
    insts = sorted(spans)
    return sum(1 for i, a in enumerate(insts) for b in insts[i + 1:]
               if spans[a][0] <= spans[b][1] and spans[b][0] <= spans[a][1] and keys[a] & keys[b])


def _bundle_spans(trace: list[dict]) -> dict[str, tuple[float, float]]:
    spans: dict[str, list[float]] = {}
    for t in trace:
        if "inst" in t and t["ev"] not in ("split",):
            s = spans.setdefault(t["inst"], [t["t"], t["t"]])
            s[0], s[1] = min(s[0], t["t"]), max(s[1], t["t"])
    return {k: (v[0], v[1]) for k, v in spans.items()}


def _explain_missing(missing: list[int], trace: list[dict], splits: list[dict]) -> list[dict]:
    """For each lost element: which bundle processed it, what that bundle left open for
    its key, and which other bundle ran the same key at the same time."""
    by_id = {t["id"]: t for t in trace if t["ev"] == "el"}
    finish = {t["inst"]: t for t in trace if t["ev"] == "finish"}
    first = defaultdict(dict)
    for t in trace:
        if t["ev"] == "first_touch":
            first[t["inst"]][t["key"]] = t
    spans = _bundle_spans(trace)
    split_insts = {s["inst"] for s in splits}
    keys_by_inst = defaultdict(set)
    for t in trace:
        if t["ev"] == "el":
            keys_by_inst[t["inst"]].add(t["key"])
    out = []
    seen_groups = set()
    for element_id in missing:
        el = by_id.get(element_id)
        if el is None:
            out.append(dict(id=element_id, processed=False))
            continue
        inst, key = el["inst"], el["key"]
        if (inst, key) in seen_groups:
            continue
        seen_groups.add((inst, key))
        lo, hi = spans.get(inst, (0, 0))
        overlapping = sorted(other for other, (a, b) in spans.items()
                             if other != inst and key in keys_by_inst[other] and a <= hi and b >= lo)
        open_at_finish = finish.get(inst, {}).get("open", {}).get(str(key))
        out.append(dict(
            ids=[m for m in missing if by_id.get(m, {}).get("inst") == inst and by_id[m]["key"] == key],
            key=key, inst=inst, bundle_was_split=inst in split_insts,
            state_seen_at_first_touch=first[inst].get(key, {}).get("bag"),
            open_batch_at_finish=open_at_finish,
            same_key_concurrently_in=[dict(inst=o, was_split=o in split_insts,
                                           state_seen_at_first_touch=first[o].get(key, {}).get("bag"),
                                           open_batch_at_finish=finish.get(o, {}).get("open", {}).get(str(key)))
                                      for o in overlapping]))
    return out


def _explain_rmw(trace: list[dict], splits: list[dict]) -> list[dict]:
    """Per key: bundles that started the key's count from 0 after it was already counted."""
    out = []
    last = {}
    for t in sorted((t for t in trace if t["ev"] == "el"), key=lambda t: t["t"]):
        k = t["key"]
        if k in last and t["size"] == 0 and last[k]["size"] > 0 and last[k]["inst"] != t["inst"]:
            out.append(dict(key=k, inst=t["inst"], read=0, previous_inst=last[k]["inst"],
                            previous_count=last[k]["size"] + 1))
        last[k] = t
    return out


def analyse_finalizer(trace: list[dict]) -> dict:
    result = {}
    for fn in FINALIZER_CASES:
        reg = {t["inst"] for t in trace if t["ev"] == "registered" and t["fn"] == fn}
        fin = {t["inst"] for t in trace if t["ev"] == "finalized" and t["fn"] == fn}
        result[fn] = dict(bundles_registered=len(reg), bundles_finalized=len(reg & fin))
    return result


def analyse_sdf(trace: list[dict], sink: list[dict], limit: int) -> dict:
    positions = Counter(r["pos"] for r in sink)
    return dict(expected=limit, emitted=sum(positions.values()), unique=len(positions),
                missing=len(set(range(limit)) - set(positions)),
                runner_splits=[dict(fraction=t["fraction"], channel=t["channel"], residual_roots=t["residual_roots"])
                               for t in trace if t["ev"] == "split"],
                tracker_splits=[t for t in trace if t["ev"] == "tracker_split" and t["fraction"] > 0],
                self_checkpoint_splits=sum(1 for t in trace if t["ev"] == "tracker_split" and t["fraction"] == 0),
                calls=[[t["start"], t["stop"]] for t in trace if t["ev"] == "call"],
                checkpoints=sum(1 for t in trace if t["ev"] == "checkpoint"))


_LOG_FIELD = {name: re.compile(pattern) for name, pattern in dict(
    level=r'"level":"([A-Z]+)"', msg=r'"msg":"((?:[^"\\]|\\.)*)"', bundle=r'"bundle":\{"ID":"([^"]*)"',
    stage=r'"stage":"([^"]*)"', elements=r'"elem count":(\d+)', first_residual=r'"res":(\d+)').items()}


def analyse_prism_log(path: Path) -> dict:
    """Counts and details of Prism's split decisions (needs --prism_log_level=debug).

    Parsed with regular expressions: Prism 2.62 writes the global window's watermark
    into its JSON log as an unquoted error string, so lines are not valid JSON."""
    counts: Counter = Counter()
    splits = []
    for line in path.read_text(errors="replace").splitlines():
        fields = {}
        for name, pattern in _LOG_FIELD.items():
            m = pattern.search(line)
            if m:
                fields[name] = m.group(1)
        msg = fields.get("msg", "")
        if msg in ("splitting report", "split elements", "ReturnResiduals: unprocessed elements",
                   "SDK returned no splits", "finalized bundle", "received non-single channel split"):
            counts[msg] += 1
        if msg == "split elements":
            splits.append(dict(bundle=fields.get("bundle"), stage=fields.get("stage"),
                               elements=int(fields.get("elements", -1)),
                               first_residual=int(fields.get("first_residual", -1))))
        if fields.get("level") in ("WARN", "ERROR"):
            counts[f"{fields['level']}: {msg}"] += 1
    return dict(counts=dict(counts), splits=splits)


# ---------------------------------------------------------------------------
# Driver (parent process)
# ---------------------------------------------------------------------------
def _child_cmd(args: argparse.Namespace, run_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "testbed.prism.repro", "--one_run", "--run_dir", str(run_dir),
           "--runner", args.runner, "--shape", args.shape, "--elements", str(args.elements),
           "--keys", str(args.keys), "--batch", str(args.batch), "--stalls", str(args.stalls),
           "--stall_s", str(args.stall_s)]
    if args.probe:
        cmd += ["--probe", args.probe]
    if args.prism_location:
        cmd += ["--prism_location", args.prism_location]
    if args.prism_log_level:
        cmd += ["--prism_log_level", args.prism_log_level]
    if args.streaming:
        cmd.append("--streaming")
    for experiment in args.experiment:
        cmd += ["--experiment", experiment]
    return cmd


def _summary_line(i: int, r: dict, probe: str | None) -> str:
    if probe == "finalizer":
        parts = [f"{fn}: {v['bundles_finalized']}/{v['bundles_registered']} bundles finalized" for fn, v in r.items()
                 if isinstance(v, dict) and "bundles_registered" in v]
        return f"run {i}: " + "; ".join(parts) + f" ({r['elapsed_s']} s)"
    if probe == "sdf":
        return (f"run {i}: emitted {r['emitted']}/{r['expected']} (unique {r['unique']}), runner split requests "
                f"{len(r['runner_splits'])}, tracker splits "
                f"{[(round(t['fraction'], 4), t['residual']) for t in r['tracker_splits']]}, "
                f"calls {len(r['calls'])}, checkpoints {r['checkpoints']} ({r['elapsed_s']} s)")
    extra = ""
    if "prism_log" in r:
        extra = f", prism split elements {r['prism_log']['counts'].get('split elements', 0)}"
    return (f"run {i}: emitted {r['emitted']}/{r['expected']} unique {r['unique']} "
            f"lost {r['expected'] - r['unique']} dup {r['duplicates']}; bundles {r['bundles']} "
            f"(pairs running one key at once {r.get('same_key_overlaps', '?')}), "
            f"SDK splits answered {r['splits_answered']}/{r['splits_requested']} "
            f"(in the shape's stage {r['shape_stage_splits']}){extra} ({r['elapsed_s']} s)")


def drive(args: argparse.Namespace) -> int:
    base = Path(args.work_dir) if args.work_dir else REPO_ROOT / ".cache" / "prism-repro"
    base.mkdir(parents=True, exist_ok=True)
    label = args.probe or args.shape
    session = Path(tempfile.mkdtemp(prefix=f"{args.runner}-{label}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=base))
    results, errors = [], 0
    print(f"# {args.runner} {label}: {args.runs} run(s), elements {args.elements}, keys {args.keys}, "
          f"batch {args.batch}, stalls {args.stalls} x {args.stall_s} s; artefacts in {session}", flush=True)
    for i in range(1, args.runs + 1):
        run_dir = session / f"run{i:02d}"
        run_dir.mkdir()
        with open(run_dir / "child.log", "w") as log:
            try:
                proc = subprocess.run(_child_cmd(args, run_dir), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=args.timeout)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        result_path = run_dir / "result.json"
        if rc != 0 or not result_path.exists():
            errors += 1
            print(f"run {i}: FAILED ({rc}); see {run_dir / 'child.log'}", flush=True)
            continue
        r = json.loads(result_path.read_text())
        results.append(r)
        print(_summary_line(i, r, args.probe), flush=True)
        if args.explain and r.get("explain"):
            for item in r["explain"][:args.explain]:
                print("   ", json.dumps(item, sort_keys=True), flush=True)
    summary = verdict(args, results, errors)
    (session / "summary.json").write_text(json.dumps(dict(args=vars(args), results=results, verdict=summary[1]),
                                                     indent=1, sort_keys=True))
    print(summary[1], flush=True)
    return summary[0]


def verdict(args: argparse.Namespace, results: list[dict], errors: int) -> tuple[int, str]:
    label = args.probe or args.shape
    head = f"VERDICT {args.runner} {label}: {len(results)} run(s) ok, {errors} failed"
    if args.probe == "finalizer":
        never = sorted({fn for r in results for fn, v in r.items() if isinstance(v, dict)
                        and v.get("bundles_registered") and v["bundles_finalized"] < v["bundles_registered"]})
        text = f"{head}; finalizers not run for: {', '.join(never) or 'none'}"
        return (2 if errors else 1 if never else 0), text
    if args.probe == "sdf":
        split = sum(1 for r in results if r["tracker_splits"] and any(t["residual"] for t in r["tracker_splits"]))
        lost = sum(1 for r in results if r["missing"])
        text = f"{head}; SDF split in {split} run(s), positions lost in {lost} run(s)"
        return (2 if errors else 1 if split or lost else 0), text
    groups = [e for r in results for e in r.get("explain") or () if "ids" in e and "open_batch_at_finish" in e]
    if groups:
        whole = sum(1 for e in groups if sorted(e["ids"]) == sorted(e["open_batch_at_finish"] or []))
        concurrent = sum(1 for e in groups if e["same_key_concurrently_in"])
        print(f"# lost groups (bundle, key): {len(groups)}; the whole open batch that bundle left in state for "
              f"the key: {whole}/{len(groups)}; another bundle ran the same key at the same time: "
              f"{concurrent}/{len(groups)}", flush=True)
    counts = [r["unique"] for r in results]
    lossy = [r for r in results if r["unique"] < r["expected"]]
    dups = sum(1 for r in results if r["duplicates"])
    expected = args.elements
    text = (f"{head}; unique elements per run {counts} of {expected}; "
            f"{len(lossy)} run(s) lost elements (total {sum(r['expected'] - r['unique'] for r in lossy)}), "
            f"{dups} run(s) with duplicates: {'LOSES ELEMENTS' if lossy else 'no loss'}")
    return (2 if errors else 1 if lossy else 0), text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m testbed.prism.repro", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--runner", choices=("prism", "fnapi"), default="prism")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--shape", choices=SHAPES, default="bag")
    parser.add_argument("--probe", choices=PROBES, default=None)
    parser.add_argument("--elements", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--stalls", type=int, default=4, help="elements that sleep (spread over the id range)")
    parser.add_argument("--stall_s", type=float, default=1.0)
    parser.add_argument("--prism_location", default=None, help="Prism binary (default: testbed.prism.runner's build)")
    parser.add_argument("--prism_log_level", choices=("debug", "info", "warn", "error"), default=None,
                        help="run Prism through a wrapper with this log level, JSON log kept per run")
    parser.add_argument("--streaming", action="store_true", help="pass --streaming to the pipeline")
    parser.add_argument("--experiment", action="append", default=[],
                        help="pass --experiments=NAME to the pipeline (repeatable), e.g. prism_disable_sdf_split "
                             "(Prism 2.77; 2.62 has no such switch)")
    parser.add_argument("--work_dir", default=None, help="where run artefacts go (default .cache/prism-repro)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--explain", type=int, default=3, help="print up to N explanations per lossy run")
    parser.add_argument("--one_run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run_dir", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one_run:
        logging.basicConfig(level=logging.WARNING)
        return one_run(args)
    return drive(args)


if __name__ == "__main__":
    # Run the imported module, not __main__: its DoFns then pickle by reference
    # (cloudpickle, the default in newer SDKs, pickles __main__ classes by value).
    from testbed.prism import repro
    sys.exit(repro.main())
