"""One benchmarked job on Flink with several SDK worker processes sharing the service.

    python -m testbed.bench.run_flink --workers 4 -- <pipeline flags>

Starts Beam's worker pool (`apache_beam.runners.worker.worker_pool_main`, with
this virtualenv first on PATH so its workers import the project), then the
pipeline streaming on Flink embedded in the locally built job server, with
`--parallelism` and `--sdk_worker_parallelism` set to the number of workers
and the EXTERNAL environment - so the scoring step really runs in that many
processes, each with its own controller. Runs until SIGTERM, then cancels the
job and stops the pool.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipelines.enrich_payments import launch
from testbed.flink_jobserver import FLINK_MINOR, build

CHECKPOINT_MS = 5000
POOL_READY_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_worker_pool(port: int, log_path: Path | None = None) -> subprocess.Popen:
    """Beam's worker pool on localhost:`port`; returns once it accepts connections."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    out = log_path.open("wb") if log_path else subprocess.DEVNULL
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + POOL_READY_S
    while time.monotonic() < deadline:
        if pool.poll() is not None:
            raise RuntimeError(f"worker pool exited with {pool.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return pool
        time.sleep(0.2)
    pool.kill()
    raise RuntimeError(f"worker pool not listening on {port} after {POOL_READY_S:.0f} s")


def flink_args(workers: int, pool_port: int) -> list[str]:
    return ["--runner=FlinkRunner", f"--flink_job_server_jar={build()}", "--flink_master=[local]",
            f"--flink_version={FLINK_MINOR}", "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}", f"--parallelism={workers}",
            f"--sdk_worker_parallelism={workers}", "--streaming", f"--checkpointing_interval={CHECKPOINT_MS}"]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m testbed.bench.run_flink", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--telemetry_out", default=None, help="accepted for symmetry with run_client; unused "
                   "(the workers' live metrics stay in their own processes)")
    p.add_argument("pipeline_args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    port = _free_port()
    pool = start_worker_pool(port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    result = None
    try:
        result = launch([*flink_args(ns.workers, port), *(a for a in ns.pipeline_args if a != "--")])
        while not stop.wait(0.5):
            if result.state in ("DONE", "FAILED", "CANCELLED"):
                logging.error("the job ended on its own: %s", result.state)
                return 1
    finally:
        if result is not None:
            try:
                result.cancel()
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                logging.warning("cancel failed: %s", exc)
        pool.terminate()
        try:
            pool.wait(10)
        except subprocess.TimeoutExpired:
            pool.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
