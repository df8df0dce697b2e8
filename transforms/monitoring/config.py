"""What the Cloud Monitoring exporter needs; picklable, so it travels inside the scoring DoFn."""
from __future__ import annotations

from dataclasses import dataclass, field

from transforms.kafka.connection import KafkaConnection

#: Cloud Monitoring accepts one point per series every 5-10 s (quotas page, OTel's
#: WRITE_INTERVAL); 10 s is the safe floor. Only tests and emulators lower it.
MIN_INTERVAL_S = 10.0
#: Series per CreateTimeSeries request (API limit).
MAX_SERIES_PER_REQUEST = 200


@dataclass(frozen=True)
class MonitoringConfig:
    project: str
    namespace: str = "payment-enrichment"
    job: str = "payment-enrichment"
    location: str = "global"
    interval_s: float = 30.0
    min_interval_s: float = MIN_INTERVAL_S
    #: host:port of an insecure endpoint (fake server, emulator); None = the real API with ADC.
    endpoint: str | None = None
    attempts: int = 2
    timeout_s: float = 5.0
    #: Input topic whose lag and oldest-uncommitted age are sampled (None = not sampled).
    lag_topic: str | None = None
    # Not part of equality/hash (it holds dicts): one exporter per process serves one job.
    kafka: KafkaConnection | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.min_interval_s <= 0 or self.interval_s < self.min_interval_s:
            raise ValueError(f"interval_s must be >= min_interval_s ({self.min_interval_s:g} s)")
        if self.attempts < 1 or self.timeout_s <= 0:
            raise ValueError("attempts must be >= 1 and timeout_s > 0")
        if self.lag_topic and self.kafka is None:
            raise ValueError("lag_topic needs a Kafka connection")
