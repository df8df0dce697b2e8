"""The enrichment job: Kafka -> parse -> bounded batches -> throttled calls to the service -> Kafka.

    python -m pipelines.enrich_payments --runner=DirectRunner \
        --bootstrap_servers=127.0.0.1:9092 --contract=my-service.yaml

The contract file (`--contract`; the project's payment-scoring contract by
default) says what the events look like and how the service is called.
Without --streaming the job drains the backlog that exists at start (from the
group's committed offsets to the end offsets) and exits; with --streaming it
follows the topic forever. Offsets are committed only after the results and
dead letters of those records have been acknowledged by Kafka.

Exit codes: 0 done; 2 refused at start (an option, the contract, Kafka or the
start-up probe), nothing read; 3 stopped while running (the service said the
job is misconfigured, or the dead-letter breaker tripped), nothing committed
past the records whose outputs were written.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipelines.command import exit_with
from pipelines.local_jars import FLINK_JOB_SERVER_JAR, KAFKA_EXPANSION_JAR, KAFKA_JOB_SERVER_JAR
from pipelines.options import (
    ConfigError,
    EnrichPaymentsOptions,
    is_streaming,
    parse_options,
    runner_name,
    start_position,
    throttle_settings,
    validate,
    validate_runner,
)
from pipelines.preflight import check_coordinator, check_kafka, check_service, load_job_contract
from pipelines.progress import ProgressReporter
from pipelines.summary import RunSummary, summarize
from transforms.contract.http import HttpJsonCaller
from transforms.contract.loader import Contract
from transforms.control.lease import LeaseSettings
from transforms.enrichment.runtime import EnrichmentStopped, close_runtimes
from transforms.enrichment.transform import ThrottledEnrichment
from transforms.events import DeadLetter, EventList, ParseEvents, event_of, shard_key_of, size_of, timestamp_of
from transforms.kafka.commit import CommitOffsets
from transforms.kafka.connection import SECURITY_KEYS, KafkaConnection, parse_properties
from transforms.kafka.exactly_once import WriteToKafkaExactlyOnce
from transforms.kafka.java_io import (
    ReadFromKafkaJava,
    UnsupportedJavaSetting,
    WriteToKafkaJava,
    commit_start_offsets,
    expansion_service,
    java_consumer_config,
)
from transforms.kafka.lag import LagProbe, PartitionLag
from transforms.kafka.read import ReadFromKafka, ReadSettings
from transforms.kafka.write import WriteToKafka
from transforms.monitoring.config import MonitoringConfig
from transforms.monitoring.prometheus import PrometheusConfig, parse_ports, stop_server
from transforms.monitoring.services import WorkerServices
from transforms.outputs import RecordEncoder
from transforms.quota.redis_coordinator import QuotaCoordinatorConfig
from transforms.quota.runtime import FleetQuota, WithFleetQuota

LOG = logging.getLogger(__name__)


class EnrichPayments(beam.PTransform):
    """The whole data path as one composite, so tests and the benchmark reuse it.

    The elements are batch-shaped: the reader emits a list of records per poll, and parsing,
    enrichment and the writer pass lists on, so Beam's cost per element is paid per list.
    `enrich` is the enrichment step (lists of ParsedEvent | DeadLetter -> lists of Enriched |
    Failed | DeadLetter, passing dead letters through; the writer also takes single
    outcomes); by default `ThrottledEnrichment` over the contract's `HttpJsonCaller`. The benchmark
    swaps in baseline clients here and keeps everything else identical. The
    whole path is one chain without Flatten. The FnApiRunner cuts it before each
    stateful step (read + parse + shard keying | enrich + write | commit) and runs
    the stages bundle by bundle in one thread: records flow from the reader to the
    committer one reader bundle at a time, and a blocked call stops the reader.
    """

    def __init__(self, conn: KafkaConnection, opts: EnrichPaymentsOptions, streaming: bool, contract: Contract,
                 enrich: beam.PTransform | None = None) -> None:
        super().__init__()
        self._conn, self._opts, self._streaming, self._contract = conn, opts, streaming, contract
        self._services = worker_services(opts)
        self._enrich = enrich or default_enrichment(opts, contract).with_worker_services(self._services)

    def expand(self, pbegin):
        o = self._opts
        java = expansion_service(o.kafka_expansion_service) if o.kafka_io == "java" else None
        if java is None:
            reader = ReadFromKafka(self._conn, o.input_topic, bounded=not self._streaming, max_records=o.max_records,
                                   settings=ReadSettings(max_open_consumers=o.max_open_consumers,
                                                         max_records_per_call=o.max_records_per_read,
                                                         partition_discovery_s=o.partition_discovery_interval),
                                   start=start_position(o), services=self._services)
        else:
            reader = ReadFromKafkaJava(self._conn, o.input_topic, java,
                                       max_records=None if self._streaming else o.max_records)
        outcomes = (pbegin
                    | "ReadKafka" >> reader
                    | "ParseEvents" >> ParseEvents(self._contract.schema, self._services)
                    | "Enrich" >> self._enrich)
        encode = RecordEncoder(self._contract, o.output_topic, o.dlq_topic)
        if o.delivery == "exactly_once":
            return (outcomes | "ToRecords" >> beam.FlatMap(encode.each)
                    | "WriteKafkaExactlyOnce" >> WriteToKafkaExactlyOnce(
                        self._conn, longest_wait_s=throttle_settings(o).deadline_s, services=self._services))
        # The Java writer's acks hold only after a checkpoint, so drains keep the Python writer,
        # whose acks are delivery callbacks (transforms/kafka/java_io.py).
        if java is not None and self._streaming:
            writer = (beam.FlatMap(encode.each)
                      | WriteToKafkaJava(self._conn, [o.output_topic, o.dlq_topic], java))
        else:
            writer = WriteToKafka(self._conn, encode=encode,   # encodes in the writer: one step less
                                  commit_every_s=None if self._streaming else o.commit_interval,
                                  services=self._services)
        acks = outcomes | "WriteKafka" >> writer
        return acks | "CommitOffsets" >> CommitOffsets(self._conn, after_checkpoint=self._streaming,
                                                       services=self._services)


def kafka_connection(opts: EnrichPaymentsOptions) -> KafkaConnection:
    props = parse_properties(opts.kafka_property)
    security = {k: v for k, v in props.items() if k in SECURITY_KEYS}
    extra = {k: v for k, v in props.items() if k not in SECURITY_KEYS}
    return KafkaConnection(opts.bootstrap_servers, group_id=opts.group_id, security=security, properties=extra)


def default_enrichment(opts: EnrichPaymentsOptions, contract: Contract) -> ThrottledEnrichment:
    """`ThrottledEnrichment` of parsed records through the contract's service; earlier stages'
    dead letters (and skipped offsets) pass through. With a fleet quota, each worker's runtime
    keeps a lease on it."""
    enrichment = ThrottledEnrichment(HttpJsonCaller(contract, event_of=event_of), throttle_settings(opts),
                                     shard_key=shard_key_of, size_of=size_of, passthrough=(DeadLetter,),
                                     timestamp_of=timestamp_of, lists=True, shard_list_type=EventList)
    quota = fleet_quota(opts, contract)
    return enrichment if quota is None else enrichment.with_runtime_factory(WithFleetQuota(quota))


def fleet_quota(opts: EnrichPaymentsOptions, contract: Contract) -> FleetQuota | None:
    if opts.quota_coordinator is None:
        return None
    service = urlparse(contract.endpoint.url)
    name = opts.quota_name or f"{service.hostname}:{service.port or (443 if service.scheme == 'https' else 80)}"
    return FleetQuota(QuotaCoordinatorConfig(opts.quota_coordinator, name), LeaseSettings(quota_rps=opts.quota_rps))


def monitoring_config(opts: EnrichPaymentsOptions) -> MonitoringConfig | None:
    """None unless --gcp_project is set: Cloud Monitoring export is opt-in."""
    if not opts.gcp_project:
        return None
    return MonitoringConfig(
        project=opts.gcp_project, namespace=opts.monitoring_namespace, job=opts.monitoring_job or opts.group_id,
        location=opts.monitoring_location, interval_s=opts.monitoring_interval,
        min_interval_s=opts.monitoring_min_interval, endpoint=opts.monitoring_endpoint,
        lag_topic=opts.input_topic, kafka=kafka_connection(opts))


def worker_services(opts: EnrichPaymentsOptions) -> WorkerServices:
    """What every step of the job that records metrics starts in its worker process."""
    return WorkerServices(monitoring_config(opts), prometheus_config(opts))


def prometheus_config(opts: EnrichPaymentsOptions) -> PrometheusConfig | None:
    """None unless --prometheus_port is set."""
    if opts.prometheus_port is None:
        return None
    return PrometheusConfig(ports=parse_ports(opts.prometheus_port), host=opts.prometheus_host,
                            lag_topic=opts.input_topic, kafka=kafka_connection(opts))


def build(pipeline: beam.Pipeline, options: PipelineOptions, contract: Contract,
          enrich: beam.PTransform | None = None) -> None:
    opts = options.view_as(EnrichPaymentsOptions)
    pipeline | "EnrichPayments" >> EnrichPayments(kafka_connection(opts), opts, is_streaming(options), contract,
                                                  enrich)


def backlog(conn: KafkaConnection, topic: str) -> int:
    """Offsets between the group's committed position (else the log start) and the end, summed."""
    return sum(p.lag for p in group_lag(conn, topic))


def committed_offsets(conn: KafkaConnection, topic: str) -> dict[int, int]:
    """The group's committed offset of each partition that has one."""
    return {p.partition: p.committed for p in group_lag(conn, topic) if p.committed is not None}


def group_lag(conn: KafkaConnection, topic: str) -> list[PartitionLag]:
    probe = LagProbe(conn, topic, timeout_s=30, retry_s=60)
    try:
        return probe.sample(with_age=False)
    finally:
        probe.close()


# KafkaIO's bounded read (BoundedReadFromUnboundedSource) splits a read of n records into
# min(100, n // 10000 + 1) readers that each wait for an equal share: from 10,000 records on, a
# reader whose partitions hold less than its share waits forever (measured: 10,000 events on 2
# partitions of 4,987 / 5,013 hung). Below that one reader takes the records from every partition.
JAVA_MAX_CHUNK = 9_999


def drain_chunks(conn: KafkaConnection, opts: EnrichPaymentsOptions, streaming: bool) -> Iterator[int | None]:
    """`max_records` of each pipeline run: one run when streaming or --drain_chunk=0, else
    runs of at most --drain_chunk offsets until the backlog seen at start is drained.

    On the FnApiRunner each reader bundle goes through every stage and is committed before
    the next is read, so a run's memory and crash duplicates are already bounded by a bundle. Runners that execute a
    batch stage by stage (the BundleBasedDirectRunner, Flink's batch mode) read a whole
    run before scoring it and commit only at its end; chunking bounds memory and
    written-but-uncommitted output (duplicated after a crash) there too. With --kafka_io=java
    every drain is chunked, at most JAVA_MAX_CHUNK records a run.
    """
    if streaming or (not opts.drain_chunk and opts.kafka_io == "python"):
        yield opts.max_records
        return
    left = backlog(conn, opts.input_topic)
    if opts.max_records is not None:
        left = min(left, opts.max_records)
    chunk = opts.drain_chunk or left   # KafkaIO's bounded read always needs a record count
    if opts.kafka_io == "java":
        chunk = min(chunk, JAVA_MAX_CHUNK)
    while True:
        take = min(chunk, left)
        yield take
        left -= take
        if left <= 0:
            return


@dataclass
class Prepared:
    options: PipelineOptions
    opts: EnrichPaymentsOptions
    conn: KafkaConnection
    contract: Contract


def prepare(argv: list[str] | None) -> Prepared:
    """Parses and validates the options and the contract, checks Kafka and probes the service
    (ConfigError on failure: nothing has been read)."""
    argv = with_runner_defaults(list(argv or []))
    options = parse_options(argv)
    opts = options.view_as(EnrichPaymentsOptions)
    validate(opts)
    validate_runner(options, argv or [])
    contract = load_job_contract(opts.contract, opts.service_url)
    conn = kafka_connection(opts)
    check_kafka(conn, [opts.input_topic, opts.output_topic, opts.dlq_topic])
    check_service(contract, opts.probe_timeout)
    check_coordinator(fleet_quota(opts, contract))
    if opts.kafka_io == "java":
        try:
            java_consumer_config(conn)
        except UnsupportedJavaSetting as err:
            raise ConfigError(str(err)) from err
        commit_start_offsets(conn, opts.input_topic, start_position(opts))
    return Prepared(options, opts, conn, contract)


FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def with_runner_defaults(argv: list[str]) -> list[str]:
    """Runner choices made for the user, each because the alternative lost or stalled data.

    The runner is recognised in every spelling Beam accepts (`options.runner_name`).
    - `DirectRunner` (also the default) means the FnApiRunner: Beam's switching
      DirectRunner would pick Prism whenever it can download it, and Prism 2.62 loses
      the state of stateful stages it splits (see options.validate_runner, docs/prism.md).
    - `FlinkRunner` without `--job_endpoint` or `--flink_job_server_jar` uses the job-server
      jar `make flink-jar` built (with `--kafka_io=java`, `make kafka-expansion-jar`'s, which
      also fills in `--kafka_expansion_service`): otherwise Beam would download the
      official jar, which no mirror here serves.
    - Flink streaming with checkpoints must finish bundles before each checkpoint:
      otherwise the stage after Impulse never flushes its output (measured: 0 records
      in 240 s) and a bounded job can end DONE having lost data.
    - Flink streaming bundles last at most `--max_batch_wait` (`--max_bundle_time_mills`):
      a batch is sent when full or when its bundle ends, so that is how long it waits.
    """
    argv = _joined(_joined(argv, "--runner"), "--kafka_io")
    runners = [a for a in argv if a.startswith("--runner=")]
    runner = runner_name(runners[-1].partition("=")[2] if runners else None)
    if runner in ("DirectRunner", "SwitchingDirectRunner"):
        argv = [a for a in argv if a not in runners] + [f"--runner={FN_API_RUNNER}"]
    if runner != "FlinkRunner":
        return argv
    if not _given(argv, "--job_endpoint", "--flink_job_server_jar"):
        argv.append(f"--flink_job_server_jar={_local_jar(argv, job_server=True)}")
    if "--kafka_io=java" in argv and not _given(argv, "--kafka_expansion_service"):
        argv.append(f"--kafka_expansion_service={_local_jar(argv, job_server=False)}")
    if "--streaming" in argv:
        if not _given(argv, "--finish_bundle_before_checkpointing"):
            argv.append("--finish_bundle_before_checkpointing")
        if not _given(argv, "--max_bundle_time_mills"):
            wait_s = parse_options(argv).view_as(EnrichPaymentsOptions).max_batch_wait
            argv.append(f"--max_bundle_time_mills={max(1, round(wait_s * 1000))}")
    return argv


def _given(argv: list[str], *flags: str) -> bool:
    return any(a == flag or a.startswith(f"{flag}=") for a in argv for flag in flags)


def _local_jar(argv: list[str], job_server: bool) -> str:
    """A jar of the local build, or a ConfigError that says how to get one."""
    if job_server and "--kafka_io=java" not in argv:
        jar, make, flags = FLINK_JOB_SERVER_JAR, "flink-jar", "--flink_job_server_jar=<jar> or --job_endpoint=<host:port>"
    elif job_server:
        jar, make, flags = (KAFKA_JOB_SERVER_JAR, "kafka-expansion-jar",
                            "--flink_job_server_jar=<jar with KafkaIO> or --job_endpoint=<host:port>")
    else:
        jar, make, flags = KAFKA_EXPANSION_JAR, "kafka-expansion-jar", "--kafka_expansion_service=<jar or host:port>"
    if not jar.is_file():
        raise ConfigError(f"--runner=FlinkRunner: no {jar.name}; run `make {make}` to build it, or pass {flags}")
    return str(jar)


def _joined(argv: list[str], flag: str) -> list[str]:
    """`--flag value` -> `--flag=value`, so the checks above see one form."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        out.append(f"{flag}={next(it, '')}" if arg == flag else arg)
    return out


def launch(argv: list[str] | None = None, enrich: beam.PTransform | None = None) -> PipelineResult:
    """Submits the job without waiting for it: for streaming jobs that a caller monitors and cancels."""
    job = prepare(argv)
    pipeline = beam.Pipeline(options=job.options)
    build(pipeline, job.options, job.contract, enrich)
    return pipeline.run()


def run(argv: list[str] | None = None, enrich: beam.PTransform | None = None,
        release: bool = True) -> RunSummary:
    """Validates, checks the environment, runs the job to its end and returns its summary.

    `enrich` replaces the enrichment step (the benchmark's baselines use it). Local
    runners run the workers in this process: at the end their enrichment runtimes
    (threads, HTTP sessions, the learned rate) and monitoring exporters are
    closed, unless `release=False` (the benchmark's drain loop, which stands in
    for one long-running job, keeps them from one drain to the next).
    Raises EnrichmentStopped (its message is the one line) when the job had to stop.
    """
    job = prepare(argv)
    options, opts, conn = job.options, job.opts, job.conn
    started = time.monotonic()
    # Local runners run the DoFns in this process, so TELEMETRY here is the job's.
    progress = ProgressReporter.start_for(opts, conn)
    summary = RunSummary(wall_s=0.0)
    # Beam's PortableRunner clears --runner in the options it runs with; pipelines with
    # cross-language transforms run on those very options, so each chunk sets it again.
    runner = options.view_as(StandardOptions).runner
    try:
        for chunk in drain_chunks(conn, opts, is_streaming(options)):
            if chunk == 0 and opts.kafka_io == "java":
                continue   # nothing to drain; KafkaIO would wait for a first record
            opts.max_records = chunk
            options.view_as(StandardOptions).runner = runner
            pipeline = beam.Pipeline(options=options)
            build(pipeline, options, job.contract, enrich)
            try:
                result: PipelineResult = pipeline.run()
                result.wait_until_finish()
            except Exception as exc:
                why = stop_reason(exc)
                if why is None:
                    raise
                raise EnrichmentStopped(why) from None
            summary.add(summarize(result, 0.0))
        summary.committed_in_kafka(opts.input_topic, committed_offsets(conn, opts.input_topic))
    finally:
        progress.stop()
        if release:
            close_runtimes()
            stop_server()  # the in-process workers' /metrics
            if opts.gcp_project:
                from transforms.monitoring.exporter import stop_exporters  # the Google client loads only when used
                stop_exporters()  # flushes the final values of in-process workers
    summary.wall_s = time.monotonic() - started
    summary.print()
    if opts.summary_path:
        summary.write_json(opts.summary_path)
    return summary


def stop_reason(exc: BaseException) -> str | None:
    """Why the job stopped, if `exc` is (or carries) an EnrichmentStopped: a runner reports a
    worker's failure as an exception of its own, with the worker's traceback as text."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, EnrichmentStopped):
            return current.why
        text = str(current)
        at = text.rfind(EnrichmentStopped.PREFIX)
        if at >= 0:
            return EnrichmentStopped(text[at:].splitlines()[0].rstrip(" '\"]")).why
        current = current.__cause__ or current.__context__
    return None


class _NotTheStop(logging.Filter):
    """Beam logs a failed bundle with its traceback before re-raising; a stop is reported as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return EnrichmentStopped.PREFIX not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam.runners.common").addFilter(_NotTheStop())
    try:
        run(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except EnrichmentStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    exit_with(main)
