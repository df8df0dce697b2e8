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
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from testbed.support.local_ports import NotListening, free_ports, terminate, wait_listening

READY_TIMEOUT_S = 30.0


class WorkerPool:
    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_ports(1)[0]
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def environment_args(self, workers: int, task_managers: int = 1) -> list[str]:
        """Pipeline flags that run the job's Python stages in `workers` processes of this pool, at
        parallelism `workers`. Flink starts `--sdk_worker_parallelism` workers in each of the
        cluster's `task_managers`, so that is the share of one."""
        if workers % task_managers:
            raise ValueError(f"{workers} workers over {task_managers} TaskManagers: give each as many")
        return ["--environment_type=EXTERNAL", f"--environment_config=localhost:{self.port}",
                f"--parallelism={workers}", f"--sdk_worker_parallelism={workers // task_managers}"]

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

    def worker_pids(self) -> list[int]:
        """The SDK worker processes the pool has started (its live children)."""
        assert self._proc is not None, "the pool is not started"
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == self._proc.pid:
                found.append(int(stat.parent.name))
        return sorted(found)

    def kill_worker(self, window_s: float = 2.0) -> int:
        """SIGKILL the SDK worker process busiest over the last `window_s` (a crashed worker);
        returns its pid. A runner may start more workers than it uses, and killing an idle one
        fails nothing."""
        before = {pid: _cpu_ticks(pid) for pid in self.worker_pids()}
        if not before:
            raise RuntimeError("the worker pool runs no SDK worker")
        time.sleep(window_s)
        busiest = max(before, key=lambda pid: _cpu_ticks(pid) - before[pid])
        os.kill(busiest, signal.SIGKILL)
        return busiest

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process so far (clock ticks), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])
