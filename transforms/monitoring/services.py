"""What each worker process serves while the job runs: the Prometheus endpoint and the Cloud Monitoring export.

A runner places the job's stages in worker processes as it likes: on Flink each
stage of a slot goes to one of the TaskManager's SDK workers, so a process may
only score, or only commit. Every step that records metrics therefore starts
these in its `setup()`; starting is once per process, later calls are free.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transforms.monitoring.config import MonitoringConfig
from transforms.monitoring.prometheus import PrometheusConfig, ensure_server


@dataclass(frozen=True)
class WorkerServices:
    """Picklable: it travels inside each recording step. The default serves nothing."""
    monitoring: MonitoringConfig | None = None
    prometheus: PrometheusConfig | None = None

    def start(self) -> None:
        """Never raises: metrics must not stop the job."""
        if self.monitoring is not None:
            # Imported here: the Google client libraries load only when export is on.
            from transforms.monitoring.exporter import ensure_exporter
            ensure_exporter(self.monitoring)
        ensure_server(self.prometheus)


NO_SERVICES = WorkerServices()


@dataclass(frozen=True)
class StartingServices:
    """A `RuntimeFactory` (see `ThrottledEnrichment.with_runtime_factory`) that starts `services` in the
    process before `inner` hands out its runtime: the enrichment step records metrics too."""
    services: WorkerServices
    inner: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        self.services.start()
        return self.inner(*args)
