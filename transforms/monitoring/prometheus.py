"""The metric catalogue for Prometheus, served from each worker process (`--prometheus_port`).

Beam metrics reach the launcher only when a portable job ends, so a running
job is scraped where its DoFns run: every worker process serves `/metrics`
with the official `prometheus-client` on the first free port of a range
(several SDK workers share a pod or a machine). A collector reads the live
registry (`TELEMETRY`) at each scrape, so nothing is copied on the data path:
counters as `payment_enrichment_<name>_total`, gauges as they are, and
distributions as histograms over the registry's power-of-two buckets
(`le` 1, 2, 4, ... 65536; a value equal to a bound is counted in the next
one). Consumer lag and the oldest uncommitted record's age are sampled from
Kafka at scrape time, at most every `lag_every_s` (every worker reports the
whole group's lag: aggregate with `max by (topic, partition)`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from transforms.kafka import lag
from transforms.kafka.connection import KafkaConnection
from transforms.monitoring import telemetry as registry
from transforms.monitoring.catalogue import CATALOGUE, COUNTER, DISTRIBUTION, RETRY_AMPLIFICATION, MetricSpec
from transforms.monitoring.telemetry import TELEMETRY, Distribution, Snapshot, Telemetry

_LOG = logging.getLogger(__name__)

NAMESPACE = "payment_enrichment"


def parse_ports(text: str) -> tuple[int, int]:
    """`"9464"` or `"9464-9467"` -> the inclusive range; ValueError says what is wrong."""
    first, _, last = text.strip().partition("-")
    try:
        ports = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"--prometheus_port must be PORT or FIRST-LAST, got {text!r}") from None
    if not 1 <= ports[0] <= ports[1] <= 65535:
        raise ValueError(f"--prometheus_port {text!r}: ports must satisfy 1 <= FIRST <= LAST <= 65535")
    return ports


@dataclass(frozen=True)
class PrometheusConfig:
    """What a worker process needs to serve `/metrics`; picklable, it travels inside every step that
    records metrics (`services.WorkerServices`)."""
    ports: tuple[int, int]
    host: str = "0.0.0.0"
    #: Input topic whose lag and oldest-uncommitted age are sampled at scrape time (None = not sampled).
    lag_topic: str | None = None
    lag_every_s: float = 5.0
    kafka: KafkaConnection | None = field(default=None, compare=False)


class _LagSampler:
    """Samples the group's lag into the registry, at most every `every_s` (a scrape must stay cheap)."""

    def __init__(self, conn: KafkaConnection, topic: str, every_s: float, telemetry: Telemetry,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._conn, self._topic, self._every_s, self._telemetry, self._clock = conn, topic, every_s, telemetry, clock
        self._probe: lag.LagProbe | None = None
        self._last = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            if self._clock() - self._last < self._every_s:
                return
            self._last = self._clock()
            try:
                if self._probe is None:
                    self._probe = lag.LagProbe(self._conn, self._topic)
                lag.record(self._telemetry, self._probe.sample(), time.time())
            except (lag.KafkaUnreachable, lag.TopicMissing) as e:
                _LOG.warning("prometheus: kafka lag not sampled: %s", e)

    def close(self) -> None:
        with self._lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None


class TelemetryCollector(Collector):
    """Every catalogued metric in the registry, as Prometheus families, read at scrape time."""

    def __init__(self, telemetry: Telemetry = TELEMETRY, before_scrape: Callable[[], None] | None = None) -> None:
        self._telemetry, self.before_scrape = telemetry, before_scrape

    def collect(self) -> Iterator[Metric]:
        if self.before_scrape is not None:
            self.before_scrape()
        yield from families(self._telemetry.snapshot())


def families(snapshot: Snapshot) -> list[Metric]:
    """The snapshot as Prometheus metric families (pure: what a scrape returns)."""
    built: dict[str, Metric] = {}
    values: list[tuple[registry.Key, Any]] = [*snapshot.counters.items(), *snapshot.gauges.items(),
                                              *snapshot.distributions.items()]
    batches, attempts = snapshot.counter("batches"), snapshot.counter("requests")
    if batches:
        values.append(((RETRY_AMPLIFICATION, ()), attempts / batches))
    for (name, labels), value in values:
        spec = CATALOGUE.get(name)
        if spec is None:
            continue
        if name not in built:
            built[name] = _family(spec)
        family = built[name]
        label_values = [dict(labels).get(k, "") for k in spec.labels]
        if isinstance(value, Distribution):
            family.add_metric(label_values, _buckets(value), value.total)  # type: ignore[call-arg]
        else:
            family.add_metric(label_values, value)  # type: ignore[call-arg]
    return list(built.values())


def _family(spec: MetricSpec) -> Metric:
    name, doc, labels = f"{NAMESPACE}_{spec.name}", f"{spec.description} [{spec.unit}]", list(spec.labels)
    if spec.kind == COUNTER:
        return CounterMetricFamily(name, doc, labels=labels)
    if spec.kind == DISTRIBUTION:
        return HistogramMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def _buckets(d: Distribution) -> list[tuple[str, float]]:
    """Cumulative counts: bucket 0 holds values < SCALE, bucket i values < SCALE * GROWTH**i."""
    out, running = [], 0
    for i in range(registry.FINITE_BUCKETS + 1):
        running += d.buckets[i]
        out.append((floatToGoString(registry.SCALE * registry.GROWTH ** i), running))
    out.append(("+Inf", d.count))
    return out


@dataclass
class _Server:
    config: PrometheusConfig
    port: int
    collector: TelemetryCollector
    http: Any
    sampler: _LagSampler | None


_SERVER: _Server | None = None
_LOCK = threading.Lock()


def ensure_server(config: PrometheusConfig | None, telemetry: Telemetry = TELEMETRY) -> int | None:
    """Serves `/metrics` in this process once (later calls only update what lag to sample); returns the
    port, or None when no port of the range is free. Never raises: metrics must not stop the job."""
    global _SERVER
    if config is None:
        return None
    with _LOCK:
        if _SERVER is not None:
            if _SERVER.config != config:
                _SERVER.collector.before_scrape = _switch_sampler(_SERVER, config, telemetry)
                _SERVER.config = config
            return _SERVER.port
        collector = TelemetryCollector(telemetry)
        first, last = config.ports
        for port in range(first, last + 1):
            try:
                http, _ = start_http_server(port, addr=config.host, registry=REGISTRY)
            except OSError:
                continue
            _SERVER = _Server(config, port, collector, http, None)
            collector.before_scrape = _switch_sampler(_SERVER, config, telemetry)
            REGISTRY.register(collector)
            _LOG.info("prometheus: /metrics on %s:%d", config.host, port)
            return port
        _LOG.error("prometheus: no free port in %d-%d on %s; this worker is not scraped", first, last, config.host)
        return None


def _switch_sampler(server: _Server, config: PrometheusConfig, telemetry: Telemetry) -> _LagSampler | None:
    if server.sampler is not None:
        server.sampler.close()
    server.sampler = None
    if config.lag_topic and config.kafka is not None:
        server.sampler = _LagSampler(config.kafka, config.lag_topic, config.lag_every_s, telemetry)
    return server.sampler


def stop_server() -> None:
    """Stops this process's server (the launcher calls it when a local run ends)."""
    global _SERVER
    with _LOCK:
        server, _SERVER = _SERVER, None
    if server is None:
        return
    REGISTRY.unregister(server.collector)
    server.http.shutdown()
    server.http.server_close()
    if server.sampler is not None:
        server.sampler.close()
