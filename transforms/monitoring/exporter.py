"""Periodic export of the process's TELEMETRY to Cloud Monitoring, from a daemon thread.

One exporter per worker process (`ensure_exporter` is idempotent; the
scoring DoFn calls it from `setup()`), so it reports while the job runs,
not only at the end. Each writer has its own `task_id` (two writers on one
series collide). Monitoring must never fail or slow the pipeline: the thread
is separate from the data path, every call has a short timeout and at most
`attempts` tries, and points that still fail are dropped and counted in
`monitoring_dropped_points` (the next export carries the newer cumulative values).
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

from transforms.kafka import lag
from transforms.monitoring import metrics, series
from transforms.monitoring.catalogue import CATALOGUE
from transforms.monitoring.config import MAX_SERIES_PER_REQUEST, MonitoringConfig
from transforms.monitoring.telemetry import TELEMETRY, Snapshot, Telemetry

_LOG = logging.getLogger(__name__)

_RETRYABLE = (api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded,
              api_exceptions.ResourceExhausted, api_exceptions.InternalServerError)
_RETRY_PAUSE_S = 0.2


def unique_task_id() -> str:
    """hostname-pid-random: unique per writer even when a pid is reused on another host."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def make_client(config: MonitoringConfig) -> monitoring_v3.MetricServiceClient:
    if config.endpoint:
        channel = grpc.insecure_channel(config.endpoint)
        return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
    return monitoring_v3.MetricServiceClient()


class Exporter:
    def __init__(self, config: MonitoringConfig, client: monitoring_v3.MetricServiceClient,
                 telemetry: Telemetry = TELEMETRY, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.resource = series.Resource(config.project, config.location, config.namespace, config.job,
                                        unique_task_id())
        self._client, self._telemetry, self._clock, self._sleep = client, telemetry, clock, sleep
        self._dropped = metrics.counter("monitoring_dropped_points", telemetry)
        self._project = f"projects/{config.project}"
        self._last_sent: dict[series.SeriesKey, float] = {}
        self._described: set[str] = set()
        self._previous: Snapshot | None = None
        self._probe: lag.LagProbe | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="monitoring-export", daemon=True)
        self._thread.start()

    def stop(self, flush: bool = True) -> None:
        """Stops the thread; `flush` sends the final values once the spacing allows (<= min interval)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join((self.config.attempts + 1) * self.config.timeout_s)
            if self._thread.is_alive():
                _LOG.warning("monitoring export still busy at shutdown; final values not flushed")
                return
        if flush:
            now = self._clock()
            wait = max((t + self.config.min_interval_s - now for t in self._last_sent.values()), default=0.0)
            self._sleep(min(max(0.0, wait), self.config.min_interval_s))
            self._export_safely()
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def _loop(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            self._export_safely()

    def _export_safely(self) -> None:
        try:
            self.export_once()
        except Exception:  # noqa: BLE001 - the export thread must survive anything
            _LOG.exception("monitoring export failed; next attempt in %g s", self.config.interval_s)

    def export_once(self) -> int:
        """Samples, builds and sends the series that are due; returns the points accepted."""
        self._sample_lag()
        snapshot = self._telemetry.snapshot()
        now = self._clock()
        built = series.build(snapshot, self._previous, self.resource, self._telemetry.started_at, now)
        self._previous = snapshot
        due = [(key, ts) for key, ts in built.items()
               if now - self._last_sent.get(key, float("-inf")) >= self.config.min_interval_s]
        self._describe({key[0] for key, _ in due})
        sent = 0
        for i in range(0, len(due), MAX_SERIES_PER_REQUEST):
            chunk = due[i:i + MAX_SERIES_PER_REQUEST]
            if self._send([ts for _, ts in chunk]):
                sent += len(chunk)
                for key, _ in chunk:
                    self._last_sent[key] = now
            else:
                self._dropped.inc(len(chunk))
        return sent

    def _send(self, time_series: list[monitoring_v3.TimeSeries]) -> bool:
        for attempt in range(1, self.config.attempts + 1):
            try:
                self._client.create_time_series(name=self._project, time_series=time_series,
                                                timeout=self.config.timeout_s, retry=None)
                return True
            except Exception as e:  # noqa: BLE001 - any failure ends in a bounded retry, then a drop
                if not isinstance(e, _RETRYABLE) or attempt == self.config.attempts:
                    _LOG.warning("dropping %d monitoring point(s) after %d attempt(s): %s",
                                 len(time_series), attempt, e)
                    return False
            self._sleep(_RETRY_PAUSE_S)
        return False

    def _describe(self, metric_types: set[str]) -> None:
        """Creates descriptors (units, descriptions) once; writes auto-create them if this fails."""
        for spec in CATALOGUE.values():
            if spec.type not in metric_types or spec.type in self._described:
                continue
            try:
                self._client.create_metric_descriptor(name=self._project, metric_descriptor=series.descriptor(spec),
                                                      timeout=self.config.timeout_s, retry=None)
            except api_exceptions.GoogleAPICallError as e:
                _LOG.info("metric descriptor %s not created (%s); retrying next export", spec.type, e)
                return  # the service is struggling: don't spend this export on descriptors
            self._described.add(spec.type)

    def _sample_lag(self) -> None:
        c = self.config
        if not c.lag_topic or c.kafka is None:
            return
        try:
            if self._probe is None:
                self._probe = lag.LagProbe(c.kafka, c.lag_topic, timeout_s=c.timeout_s)
            lag.record(self._telemetry, self._probe.sample(), self._clock())
        except (lag.KafkaUnreachable, lag.TopicMissing) as e:
            _LOG.warning("kafka lag not sampled: %s", e)


_EXPORTERS: dict[MonitoringConfig, Exporter] = {}
_EXPORTERS_LOCK = threading.Lock()


def ensure_exporter(config: MonitoringConfig | None) -> Exporter | None:
    """Starts this process's exporter for `config` once; never raises (monitoring is optional)."""
    if config is None:
        return None
    with _EXPORTERS_LOCK:
        exporter = _EXPORTERS.get(config)
        if exporter is None:
            try:
                exporter = Exporter(config, make_client(config))
            except Exception as e:  # noqa: BLE001 - e.g. no credentials: run without export
                _LOG.error("Cloud Monitoring export disabled: %s", e)
                return None
            exporter.start()
            _EXPORTERS[config] = exporter
        return exporter


def stop_exporters(flush: bool = True) -> None:
    """Stops every exporter of this process (the launcher calls it when a local run ends)."""
    with _EXPORTERS_LOCK:
        exporters = list(_EXPORTERS.values())
        _EXPORTERS.clear()
    for exporter in exporters:
        exporter.stop(flush=flush)
