"""Live progress of a local run: what was consumed, written, dead-lettered, and when the backlog drains.

Local runners (DirectRunner, FnApiRunner) run the DoFns in the launcher's
process, so the process-wide TELEMETRY is the job's; Kafka lag comes from
the group's committed offsets vs the topic's end offsets (`LagProbe`, no
record fetch). On a TTY it is one `rich` live line; otherwise one plain line
per interval, so logs show the lag growing or draining.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from transforms.kafka.connection import KafkaConnection
from transforms.kafka.lag import KafkaUnreachable, LagProbe, TopicMissing
from transforms.monitoring.telemetry import TELEMETRY, Snapshot, Telemetry

_LOG = logging.getLogger(__name__)

#: The ETA divides the lag by the events completed per second over this long (one interval is noisy).
ETA_WINDOW_S = 30.0


@dataclass
class _Sample:
    at: float
    snapshot: Snapshot
    lag: int | None


def _completed(snap: Snapshot) -> int:
    """Events finished either way: scored, or dead-lettered by the parser or the scorer."""
    return snap.counter("events_scored") + snap.counter("parse_dead_letters") + snap.counter("score_dead_letters")


def _format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


class ProgressReporter:
    def __init__(self, interval_s: float, probe: LagProbe | None, telemetry: Telemetry = TELEMETRY,
                 out: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s, self._probe, self._telemetry, self._clock = interval_s, probe, telemetry, clock
        self._out = out or sys.stdout  # resolved now, not at import (tests and tools swap sys.stdout)
        self._console = Console(file=self._out, highlight=False)
        self._live: Live | None = None
        self._started = clock()
        # Counters are process-wide (a demo drains round after round in one process): a run shows its own.
        self._previous = _Sample(self._started, telemetry.snapshot(), None)
        self._base = self._previous.snapshot
        self._window: deque[_Sample] = deque([self._previous])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def start_for(cls, opts, conn: KafkaConnection) -> ProgressReporter:
        """Started reporter for the job's options (a no-op one when --progress_interval=0)."""
        interval = opts.progress_interval
        reporter = cls(interval, LagProbe(conn, opts.input_topic) if interval > 0 else None)
        if interval > 0:
            reporter.start()
        return reporter

    def start(self) -> None:
        if self._console.is_terminal:
            self._live = Live(Text(""), console=self._console, auto_refresh=False, transient=False)
            self._live.start()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._live is not None:
            self._live.stop()
        if self._probe is not None:
            self._probe.close()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.report()
            except Exception:  # noqa: BLE001 - progress must never break the run
                _LOG.exception("progress report failed")

    def report(self) -> str:
        line = self.line()
        if self._live is not None:
            self._live.update(Text(line), refresh=True)
        else:
            print(line, file=self._out, flush=True)
        return line

    def line(self) -> str:
        """One progress line: totals of this run, rates over the last interval, the ETA over the last
        `ETA_WINDOW_S` (lag / events completed per second)."""
        now, snap = self._clock(), self._telemetry.snapshot()
        lag = self._total_lag()
        prev, current = self._previous, _Sample(now, snap, lag)
        self._previous = current
        self._window.append(current)
        while len(self._window) > 2 and now - self._window[1].at >= ETA_WINDOW_S:
            self._window.popleft()
        oldest = self._window[0]
        run = lambda name: snap.counter(name) - self._base.counter(name)  # noqa: E731
        dt = max(now - prev.at, 1e-9)
        c, p = snap.counter, prev.snapshot.counter
        attempts = c("requests") - p("requests")
        share_429 = (c("requests", outcome="429") - p("requests", outcome="429")) / attempts if attempts else 0.0
        throttled = min(1.0, (c("throttled_ms") - p("throttled_ms")) / (dt * 1000))
        done_rate = (_completed(snap) - _completed(oldest.snapshot)) / max(now - oldest.at, 1e-9)
        eta = 0.0 if lag == 0 else (lag / done_rate if lag is not None and done_rate > 0 else None)
        gauge = lambda name, fmt: "-" if snap.gauge(name) is None else format(snap.gauge(name), fmt)  # noqa: E731
        return (f"[{now - self._started:6.0f}s] consumed {run('events_in'):,} written {run('records_written'):,} "
                f"dead {run('parse_dead_letters') + run('score_dead_letters'):,} | "
                f"done {(_completed(snap) - _completed(prev.snapshot)) / dt:,.0f}/s | throttled {throttled:.0%} | "
                f"in-flight {gauge('in_flight', '.0f')}/{gauge('in_flight_limit', '.0f')} | "
                f"rate {gauge('rate_limit_rps', ',.1f')} rps | 429 {share_429:.1%} | "
                f"lag {'?' if lag is None else f'{lag:,}'} | ETA {_format_eta(eta)}")

    def _total_lag(self) -> int | None:
        if self._probe is None:
            return None
        try:
            return sum(p.lag for p in self._probe.sample(with_age=False))
        except (KafkaUnreachable, TopicMissing) as e:
            _LOG.warning("progress: kafka lag unavailable: %s", e)
            return None
