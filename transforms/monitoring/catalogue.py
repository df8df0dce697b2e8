"""Every metric the job exports: the single list the exporter, the docs and the dashboard agree on.

Names are the `TELEMETRY` names; an unlisted name is never exported, so a
typo in a hook cannot create a stray descriptor in the project.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

PREFIX = "custom.googleapis.com/payment_enrichment/"

COUNTER, GAUGE, DISTRIBUTION = "counter", "gauge", "distribution"
INT64, DOUBLE = "INT64", "DOUBLE"

PARTITION_LABELS = ("topic", "partition")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str          # COUNTER -> CUMULATIVE, GAUGE -> GAUGE, DISTRIBUTION -> CUMULATIVE DISTRIBUTION
    value_type: str    # INT64 or DOUBLE (distributions ignore it)
    unit: str          # UCUM, as Cloud Monitoring expects
    description: str
    labels: Tuple[str, ...] = ()

    @property
    def type(self) -> str:
        return PREFIX + self.name


#: retry amplification is derived by the exporter (not recorded by a hook).
RETRY_AMPLIFICATION = "retry_amplification"

_SPECS = (
    MetricSpec("events_in", COUNTER, INT64, "1", "Kafka records handed to the parser."),
    MetricSpec("events_valid", COUNTER, INT64, "1", "Records that parsed into a valid payment event."),
    MetricSpec("parse_dead_letters", COUNTER, INT64, "1", "Records dead-lettered by the parser."),
    MetricSpec("batches", COUNTER, INT64, "1", "Scoring batches completed (scored or dead-lettered)."),
    MetricSpec("retries", COUNTER, INT64, "1", "Scoring attempts beyond the first, counted when the batch completes."),
    MetricSpec("throttled_ms", COUNTER, INT64, "ms", "Time batches waited on pacer, backoff and retry budget."),
    MetricSpec("events_scored", COUNTER, INT64, "1", "Events scored successfully (goodput)."),
    MetricSpec("score_dead_letters", COUNTER, INT64, "1", "Events dead-lettered after scoring gave up."),
    MetricSpec("requests", COUNTER, INT64, "1", "Scoring HTTP attempts by outcome.", ("outcome",)),
    MetricSpec("records_written", COUNTER, INT64, "1", "Results and dead letters acknowledged by Kafka."),
    MetricSpec("offset_commits", COUNTER, INT64, "1", "Times a partition's committed prefix advanced."),
    MetricSpec("monitoring_dropped_points", COUNTER, INT64, "1",
               "Points this process gave up exporting after bounded retries."),
    MetricSpec("batch_size", DISTRIBUTION, INT64, "1", "Events per completed scoring batch."),
    MetricSpec("request_latency_ms", DISTRIBUTION, DOUBLE, "ms", "Latency of each scoring HTTP attempt."),
    MetricSpec("rate_limit_rps", GAUGE, DOUBLE, "1/s", "Request rate the controller currently allows."),
    MetricSpec("in_flight", GAUGE, INT64, "1", "Scoring requests outstanding in this process."),
    MetricSpec("in_flight_limit", GAUGE, INT64, "1", "Cap on outstanding scoring requests in this process."),
    MetricSpec(RETRY_AMPLIFICATION, GAUGE, DOUBLE, "1",
               "Scoring attempts per batch completed since the previous export (1.0 = no retries)."),
    MetricSpec("committed_offset", GAUGE, INT64, "1", "Offset this process last committed for the group.",
               PARTITION_LABELS),
    MetricSpec("kafka_lag", GAUGE, INT64, "1", "End offset minus the group's committed offset.", PARTITION_LABELS),
    MetricSpec("oldest_uncommitted_age_s", GAUGE, DOUBLE, "s",
               "Age of the record at the committed offset (0 when the partition has no lag).", PARTITION_LABELS),
)

CATALOGUE: Dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}
