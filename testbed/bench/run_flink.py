"""One benchmarked job on Flink with several SDK worker processes sharing the service.

    python -m testbed.bench.run_flink --workers 4 -- <pipeline flags>

Starts Beam's worker pool (`testbed/flink/worker_pool.py`), then the pipeline
streaming on Flink embedded in the locally built job server with the job's
Python stages in that many processes, each with its own controller. Runs
until SIGTERM, then cancels the job and stops the pool.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from pipelines.enrich_payments import launch
from testbed.flink.jobserver import FLINK_MINOR, build
from testbed.flink.worker_pool import WorkerPool

CHECKPOINT_MS = 5000


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m testbed.bench.run_flink", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("pipeline_args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with WorkerPool() as pool:
        result = launch(["--runner=FlinkRunner", f"--flink_job_server_jar={build()}", "--flink_master=[local]",
                         f"--flink_version={FLINK_MINOR}", *pool.environment_args(ns.workers), "--streaming",
                         f"--checkpointing_interval={CHECKPOINT_MS}", *(a for a in ns.pipeline_args if a != "--")])
        try:
            while not stop.wait(0.5):
                if result.state in ("DONE", "FAILED", "CANCELLED"):
                    logging.error("the job ended on its own: %s", result.state)
                    return 1
        finally:
            try:
                result.cancel()
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                logging.warning("cancel failed: %s", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
