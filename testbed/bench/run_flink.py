"""One benchmarked job on a local Flink session cluster, with several SDK worker processes sharing the service.

    python -m testbed.bench.run_flink --workers 4 --run_dir DIR -- <pipeline flags>

Starts a JobManager and `--workers` TaskManagers of one slot each, and Beam's
worker pool (`testbed/flink/worker_pool.py`); the job streams at parallelism
`--workers` with one SDK worker process per TaskManager, each with its own
controller, as a Kubernetes deployment runs one worker beside each TaskManager.
A worker then runs every stage of its own slot, so each scores its share: with
all workers in one TaskManager (Flink embedded), Beam binds the stages of every
slot to the workers round robin, and one of four scored nothing
(docs/bench/2026-12-07/s4-load-balance.md). Runs until SIGTERM, then cancels
the job through Flink's REST API and stops the cluster and the pool.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from pipelines.enrich_payments import launch
from testbed.flink import cluster
from testbed.flink.jobserver import FLINK_MINOR, build
from testbed.flink.worker_pool import WorkerPool
from testbed.support.local_ports import free_ports

CHECKPOINT_MS = 5000
ONE_SLOT = {"taskmanager.numberOfTaskSlots": 1}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m testbed.bench.run_flink", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--run_dir", type=Path, required=True, help="the cluster's config, logs and pid files")
    p.add_argument("pipeline_args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    port, jar = free_ports(1)[0], build()
    cluster.up(port, ns.run_dir, taskmanagers=ns.workers, overrides=ONE_SLOT)
    try:
        with WorkerPool(ns.run_dir / "worker-pool.log") as pool:
            result = launch(["--runner=FlinkRunner", f"--flink_job_server_jar={jar}",
                             f"--flink_master=localhost:{port}", f"--flink_version={FLINK_MINOR}",
                             *pool.environment_args(ns.workers, task_managers=ns.workers), "--streaming",
                             f"--checkpointing_interval={CHECKPOINT_MS}", *(a for a in ns.pipeline_args if a != "--")])
            job = cluster.running_job(port)
            try:
                while not stop.wait(0.5):
                    if result.state in ("DONE", "FAILED", "CANCELLED"):
                        logging.error("the job ended on its own: %s", result.state)
                        return 1
            finally:
                try:
                    cluster.cancel_job(port, job)
                except OSError as exc:   # best effort at shutdown: the cluster goes down next
                    logging.warning("cancel failed: %s", exc)
    finally:
        cluster.down(port, ns.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
