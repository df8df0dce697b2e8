"""The worker pool's job flags: Flink starts `--sdk_worker_parallelism` workers in *each* TaskManager."""
from __future__ import annotations

import pytest

from testbed.flink.worker_pool import WorkerPool


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args)


@pytest.mark.parametrize(("workers", "task_managers", "per_task_manager"), [(2, 1, 2), (2, 2, 1), (4, 2, 2)])
def test_the_job_runs_in_as_many_worker_processes_as_asked(workers: int, task_managers: int,
                                                            per_task_manager: int) -> None:
    flags = _flags(WorkerPool().environment_args(workers, task_managers=task_managers))
    assert flags["parallelism"] == str(workers)
    assert flags["sdk_worker_parallelism"] == str(per_task_manager)
    assert flags["environment_type"] == "EXTERNAL"


def test_workers_that_do_not_divide_over_the_task_managers_are_refused() -> None:
    with pytest.raises(ValueError, match="3 workers over 2 TaskManagers"):
        WorkerPool().environment_args(3, task_managers=2)
