"""Every metric the job records: the single list the hooks, the summary, the exporter, the docs
and the dashboard agree on.

Names are the live-registry (`TELEMETRY`) names and the Cloud Monitoring
metric names; `beam` is the Beam metric (`namespace/name`, `{label}`
placeholders filled from the labels) the same handle updates, or None for a
metric only the worker process itself can see (lag sampled by the exporter,
the exporter's own drops). An unlisted name cannot be recorded or exported,
so a typo in a hook fails at import instead of creating a stray series.
"""
from __future__ import annotations

from dataclasses import dataclass

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
    labels: tuple[str, ...] = ()
    beam: str | None = None    # Beam metric "namespace/name" (labels fill `{label}`), None = live only

    @property
    def type(self) -> str:
        return PREFIX + self.name

    def beam_key(self, **labels: object) -> str:
        """The Beam metric's `namespace/name` for these label values (KeyError: not a Beam metric)."""
        if self.beam is None:
            raise KeyError(f"{self.name} is not recorded as a Beam metric")
        return self.beam.format(**labels)


#: retry amplification is derived by the exporter (not recorded by a hook).
RETRY_AMPLIFICATION = "retry_amplification"

_SPECS = (
    # Kafka input
    MetricSpec("records_read", COUNTER, INT64, "1", "Kafka records read from the input topic.",
               beam="kafka_read/records"),
    MetricSpec("bytes_read", COUNTER, INT64, "By", "Key and value bytes of the records read.", beam="kafka_read/bytes"),
    MetricSpec("skipped_offsets", COUNTER, INT64, "1",
               "Input offsets without a record (transaction markers, aborted or compacted records).",
               beam="kafka_read/skipped_offsets"),
    MetricSpec("clamped_timestamps", COUNTER, INT64, "1",
               "Records whose Kafka timestamp lay outside Beam's range and was clamped into it.",
               beam="kafka_read/clamped_timestamps"),
    # Parsing
    MetricSpec("events_in", COUNTER, INT64, "1", "Kafka records handed to the parser.", beam="enrich/events_in"),
    MetricSpec("events_valid", COUNTER, INT64, "1", "Records that parsed into a valid payment event.",
               beam="enrich/events_valid"),
    MetricSpec("parse_dead_letters", COUNTER, INT64, "1", "Records dead-lettered by the parser.",
               beam="enrich/parse_dead_letters"),
    # Scoring
    MetricSpec("batches", COUNTER, INT64, "1", "Scoring batches completed (scored or dead-lettered).",
               beam="enrich/batches"),
    MetricSpec("retries", COUNTER, INT64, "1", "Scoring attempts beyond the first, counted when the batch completes.",
               beam="enrich/retries"),
    MetricSpec("throttled_ms", COUNTER, INT64, "ms",
               "Wall time during which at least one batch waited on the pacer, a backoff or the retry budget "
               "(per worker process: never more than its wall time).", beam="enrich/throttled_ms"),
    MetricSpec("events_scored", COUNTER, INT64, "1", "Events scored successfully (goodput).",
               beam="enrich/events_scored"),
    MetricSpec("score_dead_letters", COUNTER, INT64, "1", "Events dead-lettered after scoring gave up.",
               beam="enrich/score_dead_letters"),
    MetricSpec("requests", COUNTER, INT64, "1", "Scoring HTTP attempts by outcome.", ("outcome",),
               beam="enrich/requests_{outcome}"),
    MetricSpec("batch_size", DISTRIBUTION, INT64, "1", "Events per completed scoring batch.",
               beam="enrich/batch_size"),
    MetricSpec("request_latency_ms", DISTRIBUTION, DOUBLE, "ms", "Latency of each scoring HTTP attempt.",
               beam="enrich/request_latency_ms"),
    MetricSpec("rate_limit_rps", GAUGE, DOUBLE, "1/s", "Request rate the controller currently allows.",
               beam="enrich/rate_limit_rps"),
    MetricSpec("in_flight", GAUGE, INT64, "1", "Scoring requests outstanding in this process.",
               beam="enrich/in_flight"),
    MetricSpec("in_flight_limit", GAUGE, INT64, "1", "Cap on outstanding scoring requests in this process.",
               beam="enrich/in_flight_limit"),
    MetricSpec(RETRY_AMPLIFICATION, GAUGE, DOUBLE, "1",
               "Scoring attempts per batch completed since the previous export (1.0 = no retries)."),
    # Kafka output and commits
    MetricSpec("records_written", COUNTER, INT64, "1", "Results and dead letters acknowledged by Kafka.",
               beam="kafka_write/records"),
    MetricSpec("bytes_written", COUNTER, INT64, "By", "Key and value bytes of the records acknowledged by Kafka.",
               beam="kafka_write/bytes"),
    MetricSpec("delivery_errors", COUNTER, INT64, "1", "Records Kafka refused or timed out (the bundle fails).",
               beam="kafka_write/delivery_errors"),
    MetricSpec("offset_commits", COUNTER, INT64, "1", "Times a partition's committed prefix advanced.",
               beam="kafka_commit/commits"),
    MetricSpec("transactions", COUNTER, INT64, "1",
               "--delivery=exactly_once: transactions committed (outputs + consumed offset of one partition).",
               beam="kafka_commit/transactions"),
    MetricSpec("duplicates_dropped", COUNTER, INT64, "1",
               "--delivery=exactly_once: outputs not written again because a committed transaction holds them.",
               beam="kafka_commit/duplicates_dropped"),
    MetricSpec("committed_offset", GAUGE, INT64, "1", "Offset this process last committed for the group.",
               PARTITION_LABELS, beam="kafka_commit/offset/{topic}/{partition}"),
    # The fleet quota (--quota_coordinator), set by the lease keeper's thread (live only)
    MetricSpec("quota_lease_rps", GAUGE, DOUBLE, "1/s", "This worker's ceiling from the fleet quota's lease."),
    MetricSpec("quota_workers", GAUGE, INT64, "1", "Workers sharing the fleet quota at the last renewal."),
    MetricSpec("quota_coordinator_failures", COUNTER, INT64, "1",
               "Lease renewals the coordinator did not answer (the lease decays meanwhile)."),
    # Sampled from Kafka by the exporter
    MetricSpec("kafka_lag", GAUGE, INT64, "1", "End offset minus the group's committed offset.", PARTITION_LABELS),
    MetricSpec("oldest_uncommitted_age_s", GAUGE, DOUBLE, "s",
               "Age of the record at the committed offset (0 when the partition has no lag).", PARTITION_LABELS),
    # The exporter itself
    MetricSpec("monitoring_dropped_points", COUNTER, INT64, "1",
               "Points this process gave up exporting after bounded retries."),
)

CATALOGUE: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}
