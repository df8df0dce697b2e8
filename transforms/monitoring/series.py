"""Telemetry snapshot -> Cloud Monitoring `TimeSeries` (pure: no clock, no I/O).

Counters are CUMULATIVE from the process's start time (stable for the life
of the process, as the API requires), gauges are GAUGE, distributions are
CUMULATIVE DISTRIBUTION with the registry's exponential buckets. Each series
carries exactly one point.
"""
from __future__ import annotations

from dataclasses import dataclass

from google.api import distribution_pb2, label_pb2, metric_pb2, monitored_resource_pb2
from google.cloud import monitoring_v3
from google.protobuf import timestamp_pb2

from transforms.monitoring import telemetry
from transforms.monitoring.catalogue import CATALOGUE, COUNTER, DISTRIBUTION, INT64, RETRY_AMPLIFICATION, MetricSpec
from transforms.monitoring.telemetry import Distribution, Key, Snapshot

Kind = metric_pb2.MetricDescriptor.MetricKind
ValueType = metric_pb2.MetricDescriptor.ValueType

#: (metric type, sorted metric labels): what identifies one series of one writer.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Resource:
    project: str
    location: str
    namespace: str
    job: str
    task_id: str

    def proto(self) -> monitored_resource_pb2.MonitoredResource:
        return monitored_resource_pb2.MonitoredResource(type="generic_task", labels={
            "project_id": self.project, "location": self.location, "namespace": self.namespace,
            "job": self.job, "task_id": self.task_id})


def metric_kind(spec: MetricSpec) -> int:
    return Kind.CUMULATIVE if spec.kind in (COUNTER, DISTRIBUTION) else Kind.GAUGE


def value_type(spec: MetricSpec) -> int:
    if spec.kind == DISTRIBUTION:
        return ValueType.DISTRIBUTION
    return ValueType.INT64 if spec.value_type == INT64 else ValueType.DOUBLE


def descriptor(spec: MetricSpec) -> metric_pb2.MetricDescriptor:
    return metric_pb2.MetricDescriptor(
        type=spec.type, metric_kind=metric_kind(spec), value_type=value_type(spec), unit=spec.unit,
        description=spec.description, display_name=spec.name,
        labels=[label_pb2.LabelDescriptor(key=k, value_type=label_pb2.LabelDescriptor.ValueType.STRING)
                for k in spec.labels])


def retry_amplification(current: Snapshot, previous: Snapshot | None) -> float | None:
    """Attempts / batches over the batches completed between two snapshots (None: none completed).

    Both are counted when a batch completes, so this is exactly the mean
    number of HTTP attempts per batch finished in the window (1.0 = no retries).
    """
    batches = current.counter("batches") - (previous.counter("batches") if previous else 0)
    attempts = current.counter("requests") - (previous.counter("requests") if previous else 0)
    return attempts / batches if batches > 0 else None


def build(snapshot: Snapshot, previous: Snapshot | None, resource: Resource, start_s: float,
          now_s: float) -> dict[SeriesKey, monitoring_v3.TimeSeries]:
    """One series per catalogued (name, labels) in the snapshot, plus the derived retry amplification."""
    out: dict[SeriesKey, monitoring_v3.TimeSeries] = {}
    res = resource.proto()
    start, end = _timestamp(start_s), _timestamp(max(now_s, start_s + 0.001))
    values: list[tuple[Key, object]] = [*snapshot.counters.items(), *snapshot.gauges.items(),
                                        *snapshot.distributions.items()]
    amplification = retry_amplification(snapshot, previous)
    if amplification is not None:
        values.append(((RETRY_AMPLIFICATION, ()), amplification))
    for (name, labels), value in values:
        spec = CATALOGUE.get(name)
        if spec is None:
            continue
        kind = metric_kind(spec)
        interval = monitoring_v3.TimeInterval(start_time=start if kind == Kind.CUMULATIVE else end, end_time=end)
        out[(spec.type, labels)] = monitoring_v3.TimeSeries(
            metric=metric_pb2.Metric(type=spec.type, labels=dict(labels)), resource=res,
            metric_kind=kind, value_type=value_type(spec), unit=spec.unit,
            points=[monitoring_v3.Point(interval=interval, value=_typed(spec, value))])
    return out


def _typed(spec: MetricSpec, value: object) -> monitoring_v3.TypedValue:
    if isinstance(value, Distribution):
        return monitoring_v3.TypedValue(distribution_value=_distribution(value))
    if spec.value_type == INT64:
        return monitoring_v3.TypedValue(int64_value=int(value))  # type: ignore[call-overload]
    return monitoring_v3.TypedValue(double_value=float(value))  # type: ignore[arg-type]


def _distribution(d: Distribution) -> distribution_pb2.Distribution:
    options = distribution_pb2.Distribution.BucketOptions(
        exponential_buckets=distribution_pb2.Distribution.BucketOptions.Exponential(
            num_finite_buckets=telemetry.FINITE_BUCKETS, growth_factor=telemetry.GROWTH, scale=telemetry.SCALE))
    return distribution_pb2.Distribution(
        count=d.count, mean=d.mean, sum_of_squared_deviation=d.m2, bucket_options=options,
        bucket_counts=d.buckets,
        range=distribution_pb2.Distribution.Range(min=d.minimum, max=d.maximum) if d.count else None)


def _timestamp(t: float) -> timestamp_pb2.Timestamp:
    seconds = int(t)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=int((t - seconds) * 1e9))
