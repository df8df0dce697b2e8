"""Beam's SDK worker pool on this machine: several Python worker processes behind one runner.

`--environment_type=LOOPBACK` runs every worker in the submitting process, so
nothing there is ever shared between processes. Beam's worker pool
(`apache_beam.runners.worker.worker_pool_main`, what the Kubernetes sidecar
runs) starts a worker process per request instead; with Flink's
`--parallelism` and `--sdk_worker_parallelism` at N the job's DoFns really run
in N processes, each with its own scoring runtime. This virtualenv goes first
on the pool's PATH, or its workers would start a Python without the project.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from testbed.local_ports import NotListening, free_ports, terminate, wait_listening

READY_TIMEOUT_S = 30.0


class WorkerPool:
    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_ports(1)[0]
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def environment_args(self, workers: int) -> list[str]:
        """Pipeline flags that run the job's Python stages in `workers` processes of this pool."""
        return ["--environment_type=EXTERNAL", f"--environment_config=localhost:{self.port}",
                f"--parallelism={workers}", f"--sdk_worker_parallelism={workers}"]

    def start(self) -> WorkerPool:
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        out = self.log_path.open("wb") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                       f"--service_port={self.port}"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_listening(self._proc, self.port, READY_TIMEOUT_S, poll_s=0.2)
        except NotListening as exc:
            self.stop()
            raise RuntimeError(f"worker pool {exc}") from None
        return self

    def stop(self) -> None:
        terminate(self._proc)

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
