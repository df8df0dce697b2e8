"""One benchmarked client in its own pipeline process (FnApiRunner).

    python -m testbed.bench.run_client --client ours|naive|pool|beam \
        --telemetry_out DIR/client.jsonl [--max_seconds 60] -- <pipeline flags>

Runs `pipelines.enrich_payments.run(flags, score=<client>)` in a loop: a drain
reads up to the end offsets seen at its start, so while the producer keeps
writing the loop starts the next drain when one finishes. A drain that fails
(e.g. Beam's RequestResponseIO raising after its retries) is started again, as a
production runner would retry the bundle: offsets are committed only after the
writes, so nothing is lost. The process ends at SIGTERM or after --max_seconds.

Once a second it appends one JSON line to --telemetry_out: the process-wide
TELEMETRY counters and gauges, the request latencies observed since the last
line, and the drain loop's own counts. The orchestrator tails that file.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from pipelines.enrich_payments import run
from pipelines.preflight import load_job_contract
from testbed.bench.clients import CLIENTS, make_client
from transforms.contract.loader import DEFAULT_CONTRACT
from transforms.control.settings import DEFAULTS
from transforms.monitoring.telemetry import TELEMETRY, Labels

WRITE_EVERY_S = 1.0
LATENCY = "request_latency_ms"


class _LatencyTap:
    """Collects every request latency the client reports (ours and the baselines alike record
    them through the `request_latency_ms` metric), as a TELEMETRY listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: list[float] = []

    def __call__(self, name: str, value: float, labels: Labels) -> None:
        if name == LATENCY:
            with self._lock:
                self._samples.append(round(float(value), 3))

    def drain(self) -> list[float]:
        with self._lock:
            samples, self._samples = self._samples, []
        return samples


def _flat(key) -> str:
    name, labels = key
    return name + "".join(f"|{k}={v}" for k, v in labels)


class TelemetryWriter(threading.Thread):
    def __init__(self, path: str, tap: _LatencyTap, loop_state: dict[str, object]) -> None:
        super().__init__(name="bench-telemetry", daemon=True)
        self._path, self._tap, self._state = path, tap, loop_state
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def write_line(self) -> None:
        with self._lock:
            snap = TELEMETRY.snapshot()
            line = {"t": time.time(), "pid": os.getpid(),
                    "counters": {_flat(k): v for k, v in snap.counters.items()},
                    "gauges": {_flat(k): v for k, v in snap.gauges.items()},
                    "latencies_ms": self._tap.drain(), **self._state}
            with open(self._path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")

    def run(self) -> None:
        while not self._stop.wait(WRITE_EVERY_S):
            self.write_line()

    def stop(self) -> None:
        self._stop.set()
        self.write_line()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m testbed.bench.run_client", description=__doc__.split("\n\n")[0])
    p.add_argument("--client", required=True, choices=CLIENTS)
    p.add_argument("--telemetry_out", required=True)
    p.add_argument("--max_seconds", type=float, default=None, help="stop starting drains after this long")
    p.add_argument("--idle_pause_s", type=float, default=0.5, help="pause after an empty drain")
    p.add_argument("pipeline_args", nargs=argparse.REMAINDER)
    return p


def _option(args: list[str], name: str, default: str) -> str:
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return default


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ns = _parser().parse_args(argv)
    pipeline_args = [a for a in ns.pipeline_args if a != "--"]
    contract = load_job_contract(_option(pipeline_args, "contract", str(DEFAULT_CONTRACT)),
                                 _option(pipeline_args, "service_url", ""))
    batch_size = int(_option(pipeline_args, "batch_size", str(DEFAULTS.batch_size)))
    tap = _LatencyTap()
    TELEMETRY.add_listener(tap)
    state: dict[str, object] = {"client": ns.client, "drains_started": 0, "drains_finished": 0,
                                "drains_failed": 0, "last_error": None}
    writer = TelemetryWriter(ns.telemetry_out, tap, state)

    def on_term(*_: object) -> None:
        writer.stop()
        sys.stdout.flush()
        os._exit(0)  # pipeline threads cannot be interrupted; offsets commit only after writes

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    writer.start()
    started = time.monotonic()
    while ns.max_seconds is None or time.monotonic() - started < ns.max_seconds:
        state["drains_started"] = int(state["drains_started"]) + 1
        try:
            # The drains stand in for one long-running job: keep the learned rate between them, and
            # probe the service once, as that job would at its start.
            probe = [] if state["drains_started"] == 1 else ["--probe_timeout=0"]
            summary = run([*pipeline_args, *probe], enrich=make_client(ns.client, contract, batch_size),
                          release=False)
        except Exception as exc:  # noqa: BLE001 - a failed drain is data, not the end
            state["drains_failed"] = int(state["drains_failed"]) + 1
            state["last_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            logging.warning("drain failed (%s); starting again", state["last_error"])
            time.sleep(1.0)
            continue
        state["drains_finished"] = int(state["drains_finished"]) + 1
        if summary.counter("events_in") == 0:
            time.sleep(ns.idle_pause_s)
    writer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
