"""Options of the enrichment job (visible in `--help`) and their validation.

Bad values end the job before it starts with one line and exit code 2:
`ConfigError` carries that line.
"""
from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PipelineOptions,
    StandardOptions,
    _BeamArgumentParser,  # the parser Beam itself uses
)

from transforms.contract.loader import DEFAULT_CONTRACT
from transforms.control.settings import DEFAULTS, ThrottleSettings
from transforms.kafka.connection import is_placeholder, is_secret_key, parse_properties, resolved
from transforms.kafka.exactly_once import transaction_timeout_ms
from transforms.kafka.read import ReadSettings
from transforms.kafka.start import StartPosition
from transforms.monitoring.config import MIN_INTERVAL_S
from transforms.monitoring.prometheus import parse_ports

# Runners whose job server contributes options Python cannot know in advance
# (e.g. Flink's --checkpointing_interval); unknown flags pass through to them.
PASS_THROUGH_RUNNERS = {"FlinkRunner", "PortableRunner"}

KAFKA_IO_CHOICES = ("python", "java")
DELIVERY_CHOICES = ("at_least_once", "exactly_once")
# Runners exactly-once delivery is tested on (transforms/kafka/exactly_once.py).
EXACTLY_ONCE_RUNNERS = {"FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "FlinkRunner", "PortableRunner"}
# A class only a job-server jar built with KafkaIO has (testbed/kafka/expansion.py).
_KAFKA_IO_CLASS = "org/apache/beam/sdk/io/kafka/KafkaIO.class"

_KNOWN_RUNNERS = {path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS}


def runner_name(runner: str | None) -> str:
    """The class name of the runner Beam builds for `--runner=runner`, found the way Beam finds
    it (case-insensitive, "Runner" optional, or a dotted path): `prism`, `PRISMRUNNER` and
    `apache_beam.runners.portability.prism_runner.PrismRunner` are all "PrismRunner", so no
    guard can be passed by spelling. Unset: Beam's default, "DirectRunner"."""
    name = runner or StandardOptions.DEFAULT_RUNNER
    path = _KNOWN_RUNNERS.get(name.lower(), _KNOWN_RUNNERS.get(name.lower() + "runner", name))
    return path.rsplit(".", 1)[-1]


class ConfigError(ValueError):
    """A configuration problem, reported as one line before anything starts."""


class EnrichPaymentsOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("payment enrichment")
        g.add_argument("--bootstrap_servers", default="127.0.0.1:9092", help="Kafka bootstrap servers.")
        g.add_argument("--input_topic", default="payments", help="Topic of raw payment events.")
        g.add_argument("--output_topic", default="payments-scored", help="Topic for enriched events.")
        g.add_argument("--dlq_topic", default="payments-dlq", help="Topic for dead letters.")
        g.add_argument("--group_id", default="payment-enrichment",
                       help="Consumer group whose committed offsets mark completed work.")
        g.add_argument("--kafka_property", action="append", default=[], metavar="KEY=VALUE",
                       help="Extra librdkafka client property, repeatable (e.g. security.protocol=SSL).")
        g.add_argument("--start_position", default=None, metavar="earliest|latest|TIME",
                       help="Where a group without committed offsets starts: earliest, latest, or the first record "
                            "at or after a time (epoch ms or ISO-8601 with a zone). A group that has committed "
                            "resumes from its offsets. Default: the auto.offset.reset --kafka_property, else earliest.")
        g.add_argument("--partition_discovery_interval", type=float, default=ReadSettings.partition_discovery_s,
                       help="Streaming: seconds between listings of the input topic's partitions; a partition "
                            "added while the job runs is read from its earliest offset (0 = list once at start).")
        g.add_argument("--max_open_consumers", type=int, default=8,
                       help="Kafka consumers each reader instance keeps open; more partitions share them "
                            "(each consumer has its own threads, connections and a 2 MiB pre-fetch).")
        g.add_argument("--max_records_per_read", type=int, default=ReadSettings.max_records_per_call,
                       help="Records a reader call takes from one partition before it self-checkpoints (also "
                            "after 5 s), ending the bundle: larger bundles wait less at their ends, smaller "
                            "ones commit more often and redo less after a failure.")
        g.add_argument("--kafka_io", choices=KAFKA_IO_CHOICES, default="python",
                       help="Kafka client: python (confluent-kafka, every runner) or java (Beam's KafkaIO, "
                            "FlinkRunner only; uses the jars of `make kafka-expansion-jar` unless "
                            "--kafka_expansion_service and --flink_job_server_jar name others).")
        g.add_argument("--kafka_expansion_service", default=None, metavar="JAR|HOST:PORT",
                       help="--kafka_io=java: the KafkaIO expansion service jar (started with the EMBEDDED "
                            "environment) or the address of a running one; `make kafka-expansion-jar` builds both jars.")
        g.add_argument("--delivery", choices=DELIVERY_CHOICES, default="at_least_once",
                       help="at_least_once: consumers de-duplicate on txn_id; exactly_once: outputs and consumed "
                            "offsets in one Kafka transaction per input partition (consumers read_committed).")
        g.add_argument("--max_records", type=int, default=None,
                       help="Drain at most this many records in total (bounded mode only).")
        g.add_argument("--drain_chunk", type=int, default=50_000,
                       help="Bounded mode: drain in runs of at most this many records, each committed before "
                            "the next starts; bounds memory and crash duplicates (0 = one run).")
        g.add_argument("--commit_interval", type=float, default=5.0,
                       help="Bounded mode: the writer also commits what it has delivered every this many seconds "
                            "of work, so a crash repeats at most that much (0 = at the end of each run only). "
                            "Streaming commits after each completed checkpoint instead.")
        g.add_argument("--contract", default=str(DEFAULT_CONTRACT), metavar="FILE",
                       help="The events' schema, the service and how they meet (YAML or JSON; README, \"Enrich your "
                            "own events\"); the default is the project's payment-scoring contract.")
        g.add_argument("--service_url", default=None,
                       help="The service's full URL, overriding the contract's service.url.")
        g.add_argument("--probe_timeout", type=float, default=30.0,
                       help="Seconds the start-up probe (one real request) may take to get an answer that is not "
                            "retryable; a misconfigured service ends the job before anything is read (0 = no probe).")
        g.add_argument("--num_shards", type=int, default=DEFAULTS.num_shards,
                       help="Shards (keys) of the stateful batching step.")
        g.add_argument("--batch_size", type=int, default=DEFAULTS.batch_size, help="Max events per request.")
        g.add_argument("--max_batch_bytes", type=int, default=DEFAULTS.max_batch_bytes,
                       help="Max bytes of events per request.")
        g.add_argument("--max_batch_wait", type=float, default=2.0,
                       help="Flink streaming: max seconds an open batch waits before it is sent (sets Flink's "
                            "--max_bundle_time_mills unless given: a batch is sent when full or at its bundle's end).")
        g.add_argument("--max_in_flight", type=int, default=DEFAULTS.max_in_flight,
                       help="Hard cap on requests in flight at the service for the whole job, whatever the number "
                            "of workers (split over the --num_shards shards; the adaptive limit stays below it).")
        g.add_argument("--min_in_flight", type=int, default=DEFAULTS.min_in_flight,
                       help="Floor of a worker's adaptive in-flight limit (at most the per-shard cap "
                            "--max_in_flight // --num_shards).")
        g.add_argument("--in_flight_headroom", type=float, default=DEFAULTS.in_flight_headroom,
                       help="Adaptive in-flight limit = learned rate x latency x this (>= 1).")
        g.add_argument("--initial_rate", type=float, default=DEFAULTS.initial_rate, help="Starting request rate (req/s).")
        g.add_argument("--min_rate", type=float, default=DEFAULTS.min_rate, help="Floor of the learned request rate (req/s).")
        g.add_argument("--max_rate", type=float, default=DEFAULTS.max_rate, help="Ceiling of the learned rate (req/s).")
        g.add_argument("--max_attempts", type=int, default=DEFAULTS.max_attempts,
                       help="Attempts per batch before dead-lettering.")
        g.add_argument("--batch_deadline", type=float, default=DEFAULTS.deadline_s,
                       help="Seconds a batch may spend, attempts and waits included, before it is dead-lettered "
                            "with the reason `deadline`.")
        g.add_argument("--retry_budget_ratio", type=float, default=DEFAULTS.retry_budget_ratio,
                       help="Retry tokens earned per first attempt (0.1 = retries <= ~10%%).")
        g.add_argument("--request_timeout", type=float, default=DEFAULTS.request_timeout_s,
                       help="Seconds one attempt may take in all (connecting, sending, the whole answer).")
        g.add_argument("--max_dead_letter_share", type=float, default=DEFAULTS.max_dead_letter_share,
                       help="Stop the job when more than this share of the last --breaker_window events enriched "
                            "were dead-lettered, before their offsets are committed (1 = never).")
        g.add_argument("--breaker_window", type=int, default=DEFAULTS.breaker_window,
                       help="Events the dead-letter breaker looks back over.")
        g.add_argument("--summary_path", default=None, help="Write the run summary as JSON here.")
        q = parser.add_argument_group("fleet quota (one API quota shared by many jobs and workers)")
        q.add_argument("--quota_coordinator", default=None, metavar="redis://HOST:PORT",
                       help="Share --quota_rps with every job that names the same --quota_name, through leases "
                            "from this Redis (off when unset).")
        q.add_argument("--quota_name", default=None,
                       help="The shared quota's name (unset: the service's host:port, so jobs calling one API share).")
        q.add_argument("--quota_rps", type=float, default=None,
                       help="Requests per second the whole fleet may send (needs --quota_coordinator).")
        m = parser.add_argument_group("monitoring")
        m.add_argument("--gcp_project", default=None,
                       help="Export live metrics to Cloud Monitoring in this project (off when unset).")
        m.add_argument("--monitoring_interval", type=float, default=30.0,
                       help=f"Seconds between exports (>= {MIN_INTERVAL_S:g}: one point per series per 10 s).")
        m.add_argument("--monitoring_namespace", default="payment-enrichment",
                       help="`namespace` label of the generic_task resource.")
        m.add_argument("--monitoring_job", default=None,
                       help="`job` label of the generic_task resource (unset: the --group_id).")
        m.add_argument("--monitoring_location", default="global",
                       help="`location` label of the generic_task resource (e.g. the region).")
        m.add_argument("--monitoring_endpoint", default=None, metavar="HOST:PORT",
                       help="Insecure MetricService endpoint instead of the Google API (emulators, tests).")
        m.add_argument("--monitoring_min_interval", type=float, default=MIN_INTERVAL_S,
                       help="Tests/emulators only (needs --monitoring_endpoint): lowers the per-series spacing.")
        m.add_argument("--prometheus_port", default=None, metavar="PORT|FIRST-LAST",
                       help="Serve live metrics at /metrics from each worker process, on the first free port of "
                            "the range (off when unset).")
        m.add_argument("--prometheus_host", default="0.0.0.0",
                       help="Address the /metrics server binds (127.0.0.1: this machine only).")
        m.add_argument("--progress_interval", type=float, default=5.0,
                       help="Seconds between live progress lines of a local run (0 = quiet).")
        for action in [*g._group_actions, *q._group_actions, *m._group_actions]:
            action.help = f"{action.help} (default: %(default)s)"


class _OneLineParser(_BeamArgumentParser):
    """A bad value (`--batch_size=abc`) is one ConfigError line, not usage text plus a line."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(" ".join(message.split()))


#: The runner options most jobs set; --help_beam lists all of Beam's.
_BEAM_ESSENTIALS = ("--runner", "--streaming", "--flink_master", "--parallelism", "--environment_type",
                    "--checkpointing_interval", "--direct_num_workers")
_PROG = "python -m pipelines.enrich_payments"


def _help_parser() -> argparse.ArgumentParser:
    """This job's options alone (Beam's several hundred would bury them)."""
    parser = argparse.ArgumentParser(
        prog=_PROG, usage="%(prog)s [OPTION=VALUE ...]", add_help=False,
        description="Enrich a Kafka topic through a capacity-limited HTTP service.",
        epilog=f"Runner options are Beam's ({', '.join(_BEAM_ESSENTIALS)}, ...): --help_beam lists them all.")
    EnrichPaymentsOptions._add_argparse_args(parser)
    return parser


def job_default(name: str) -> Any:
    """The default of one of this job's options (declared once, in `EnrichPaymentsOptions`)."""
    return _help_parser().get_default(name)


def parse_options(argv: list[str] | None) -> PipelineOptions:
    """Parses argv strictly: unknown flags are errors (except for portable runners). `-h`/`--help`
    prints this job's options, `--help_beam` Beam's as well; both exit."""
    argv = argv or []
    parser = _OneLineParser(allow_abbrev=False, add_help=False, prog=_PROG)
    for cls in PipelineOptions.__subclasses__():
        _add_all(cls, parser)
    if "-h" in argv or "--help" in argv or "--help_beam" in argv:
        (parser if "--help_beam" in argv else _help_parser()).print_help()
        raise SystemExit(0)
    known, unknown = parser.parse_known_args(argv)
    if unknown and runner_name(getattr(known, "runner", None)) not in PASS_THROUGH_RUNNERS:
        # Names only: a mistyped flag's value may be a secret.
        names = " ".join(arg.split("=", 1)[0] for arg in unknown if arg.startswith("-"))
        raise ConfigError(f"unknown option(s): {names or f'{len(unknown)} stray argument(s)'} (see --help)")
    return PipelineOptions(argv)


def _add_all(cls: type, parser: argparse.ArgumentParser, seen: set | None = None) -> None:
    seen = set() if seen is None else seen
    if cls in seen:
        return
    seen.add(cls)
    try:
        cls._add_argparse_args(parser)  # type: ignore[attr-defined]
    except argparse.ArgumentError:
        pass  # an option declared by two option classes (Beam does the same)
    for sub in cls.__subclasses__():
        _add_all(sub, parser, seen)


def validate(opts: EnrichPaymentsOptions) -> None:
    def positive(name: str, value: float) -> None:
        if value is None or value <= 0:
            raise ConfigError(f"--{name} must be > 0 (got {value})")

    for name in ("max_open_consumers", "max_records_per_read", "max_batch_wait"):
        positive(name, getattr(opts, name))
    throttle_settings(opts)
    if opts.probe_timeout is None or opts.probe_timeout < 0:
        raise ConfigError(f"--probe_timeout must be >= 0 (got {opts.probe_timeout})")
    if opts.partition_discovery_interval is None or opts.partition_discovery_interval < 0:
        raise ConfigError(f"--partition_discovery_interval must be >= 0 (got {opts.partition_discovery_interval})")
    if opts.commit_interval is None or opts.commit_interval < 0:
        raise ConfigError(f"--commit_interval must be >= 0 (got {opts.commit_interval})")
    if opts.drain_chunk is None or opts.drain_chunk < 0:
        raise ConfigError(f"--drain_chunk must be >= 0 (got {opts.drain_chunk})")
    if opts.max_records is not None and opts.max_records < 0:
        raise ConfigError(f"--max_records must be >= 0 (got {opts.max_records})")
    if opts.service_url is not None:
        url = urlparse(opts.service_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"--service_url must be an http(s) URL with a host (got {opts.service_url!r})")
    for item in opts.kafka_property:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--kafka_property must be KEY=VALUE (got one without a key or an '=')")
    validate_kafka_properties(opts)
    for name in ("input_topic", "output_topic", "dlq_topic", "group_id", "bootstrap_servers"):
        if not getattr(opts, name):
            raise ConfigError(f"--{name} must not be empty")
    start_position(opts)
    if opts.delivery == "exactly_once":
        try:
            transaction_timeout_ms(throttle_settings(opts).deadline_s, parse_properties(opts.kafka_property))
        except ValueError as err:
            raise ConfigError(f"--kafka_property {err} (--batch_deadline)") from None
    validate_monitoring(opts)
    validate_quota(opts)


def validate_quota(opts: EnrichPaymentsOptions) -> None:
    if opts.quota_coordinator is None:
        if opts.quota_rps is not None or opts.quota_name is not None:
            raise ConfigError("--quota_rps and --quota_name need --quota_coordinator=redis://HOST:PORT")
        return
    if urlparse(opts.quota_coordinator).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"--quota_coordinator must be a redis:// (or rediss://, unix://) URL "
                          f"(got {opts.quota_coordinator!r})")
    if opts.quota_rps is None or not opts.quota_rps > 0:
        raise ConfigError(f"--quota_coordinator needs --quota_rps > 0 (got {opts.quota_rps})")


def validate_kafka_properties(opts: EnrichPaymentsOptions) -> None:
    """Secrets only as placeholders (a literal shows in the process list, the Kubernetes Job spec
    and the pipeline the runner stores); each placeholder readable here and now."""
    for key, value in parse_properties(opts.kafka_property).items():
        if not is_placeholder(value):
            if is_secret_key(key):
                raise ConfigError(f"--kafka_property {key}: a secret on the command line shows in the process list "
                                  "and the job's spec; give ${env:NAME}, ${dir:DIR:FILE} or ${file:PATH:KEY}")
            continue
        if opts.kafka_io == "java":
            raise ConfigError(f"--kafka_property {key}: placeholders are read by the Python Kafka client; "
                              "--kafka_io=java would pass them to the Java clients unread")
        try:
            resolved(key, value)
        except ValueError as err:
            raise ConfigError(f"--kafka_property {err}") from None


def start_position(opts: EnrichPaymentsOptions) -> StartPosition:
    """--start_position, else the auto.offset.reset --kafka_property (ConfigError names the option)."""
    try:
        if opts.start_position is not None:
            return StartPosition.parse(opts.start_position)
        return StartPosition.from_reset(parse_properties(opts.kafka_property))
    except ValueError as err:
        raise ConfigError(f"--{'start_position' if opts.start_position is not None else 'kafka_property'}: {err}") \
            from None


# ThrottleSettings fields whose option has another name.
_OPTION_OF = {"deadline_s": "batch_deadline", "request_timeout_s": "request_timeout"}
_SETTING_OPTIONS = ("batch_size", "max_batch_bytes", "num_shards", "max_in_flight", "min_in_flight",
                    "in_flight_headroom", "initial_rate", "min_rate", "max_rate", "max_attempts", "deadline_s",
                    "request_timeout_s", "retry_budget_ratio", "max_dead_letter_share", "breaker_window")


def throttle_settings(opts: EnrichPaymentsOptions) -> ThrottleSettings:
    """The options' ThrottleSettings; ConfigError naming the option if they cannot work."""
    values = {name: getattr(opts, _OPTION_OF.get(name, name)) for name in _SETTING_OPTIONS}
    try:
        return ThrottleSettings(**values)
    except ValueError as e:
        message = str(e)
        for name in _SETTING_OPTIONS:
            message = re.sub(rf"\b{name}\b", "--" + _OPTION_OF.get(name, name), message)
        raise ConfigError(message) from None


def validate_monitoring(opts: EnrichPaymentsOptions) -> None:
    if opts.progress_interval < 0:
        raise ConfigError(f"--progress_interval must be >= 0 (got {opts.progress_interval})")
    floor = opts.monitoring_min_interval
    if floor <= 0 or (floor < MIN_INTERVAL_S and not opts.monitoring_endpoint):
        raise ConfigError(f"--monitoring_min_interval below {MIN_INTERVAL_S:g} s needs --monitoring_endpoint "
                          f"(Cloud Monitoring rejects faster writes; got {floor})")
    if opts.monitoring_interval < floor:
        raise ConfigError(f"--monitoring_interval must be >= {floor:g} s (got {opts.monitoring_interval})")
    if opts.gcp_project == "":
        raise ConfigError("--gcp_project must not be empty")
    if opts.prometheus_port is not None:
        try:
            parse_ports(opts.prometheus_port)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def validate_runner(options: PipelineOptions, argv: list[str]) -> None:
    """Streaming on Flink commits offsets in bundle finalization, which runs only after a
    completed checkpoint: without checkpointing nothing would ever be committed."""
    runner = runner_name(options.view_as(StandardOptions).runner)
    if runner == "PrismRunner":
        raise ConfigError("PrismRunner is refused: Prism 2.62 splits a stalled bundle and runs the split-off "
                          "elements of a stateful stage without their keys' state, then the later commit "
                          "overwrites the earlier one, so the batcher loses open batches (a drain lost 11 "
                          "of 1,980 events) and the offset committer keeps its acknowledged ranges in such "
                          "state (docs/prism.md); use --runner=DirectRunner (FnApiRunner) or FlinkRunner")
    if is_streaming(options) and runner in ("DirectRunner", "SwitchingDirectRunner", "FnApiRunner"):
        raise ConfigError("--streaming needs FlinkRunner: the local runners execute an unbounded source as "
                          "an endless batch; use the drain (no --streaming) locally")
    validate_kafka_io(options, runner, argv)
    validate_delivery(options, runner)
    if not is_streaming(options) or runner not in PASS_THROUGH_RUNNERS:
        return
    interval = _java_side_options(argv).checkpointing_interval
    if not (interval or "").isdigit() or int(interval) <= 0:
        raise ConfigError("--streaming on Flink needs --checkpointing_interval=<ms> > 0: offsets are "
                          "committed only after a completed checkpoint")


def _java_side_options(argv: list[str]) -> argparse.Namespace:
    """Flink runner options Python does not declare."""
    flink = argparse.ArgumentParser(add_help=False)
    flink.add_argument("--checkpointing_interval", default=None)
    flink.add_argument("--finish_bundle_before_checkpointing", nargs="?", const="true", default=None)
    flink.add_argument("--unaligned_checkpoint_enabled", nargs="?", const="true", default="false")
    return flink.parse_known_args(argv)[0]


def validate_kafka_io(options: PipelineOptions, runner: str, argv: list[str]) -> None:
    """--kafka_io=java runs KafkaIO inside the Flink JVM (EMBEDDED), so it needs FlinkRunner, an
    expansion service and a job server that carries KafkaIO; in streaming its writer's acks hold only
    if every operator flushes before each aligned checkpoint barrier (see transforms/kafka/java_io.py)."""
    opts = options.view_as(EnrichPaymentsOptions)
    if opts.kafka_io != "java":
        return
    if runner != "FlinkRunner":
        raise ConfigError(f"--kafka_io=java needs FlinkRunner (got {runner}): KafkaIO runs in the Flink JVM "
                          "(EMBEDDED environment, no Docker); use --kafka_io=python on other runners")
    if not opts.kafka_expansion_service:
        raise ConfigError("--kafka_io=java needs --kafka_expansion_service=<jar or host:port> "
                          "(make kafka-expansion-jar builds it)")
    if opts.kafka_expansion_service.endswith(".jar") and not Path(opts.kafka_expansion_service).is_file():
        raise ConfigError(f"--kafka_expansion_service: no such jar {opts.kafka_expansion_service}")
    jar = getattr(options.view_as(FlinkRunnerOptions), "flink_job_server_jar", None)
    if jar and not _has_kafka_io(jar):
        raise ConfigError(f"--kafka_io=java needs a job-server jar with KafkaIO on its classpath; {jar} has none "
                          "(make kafka-expansion-jar builds one)")
    java_side = _java_side_options(argv)
    if is_streaming(options) and (java_side.finish_bundle_before_checkpointing or "true") != "true":
        raise ConfigError("--kafka_io=java streaming needs --finish_bundle_before_checkpointing: offsets are "
                          "committed for records that reached the Java writer before a checkpoint")
    if is_streaming(options) and java_side.unaligned_checkpoint_enabled != "false":
        raise ConfigError("--kafka_io=java streaming refuses unaligned checkpoints: records in flight past a "
                          "barrier are not flushed by the Java writer before that checkpoint completes")


def validate_delivery(options: PipelineOptions, runner: str) -> None:
    """Exactly-once is refused where it is not known to hold, never silently downgraded."""
    opts = options.view_as(EnrichPaymentsOptions)
    if opts.delivery != "exactly_once":
        return
    if opts.kafka_io != "python":
        raise ConfigError("--delivery=exactly_once needs --kafka_io=python: its transactional writer commits the "
                          "consumed offsets with the outputs, which KafkaIO's writer cannot")
    if runner not in EXACTLY_ONCE_RUNNERS:
        raise ConfigError(f"--delivery=exactly_once is not offered on {runner}: it is tested on the "
                          "FnApiRunner (DirectRunner) and Flink; use --delivery=at_least_once there")


def _has_kafka_io(jar: str) -> bool:
    try:
        with zipfile.ZipFile(jar) as archive:
            archive.getinfo(_KAFKA_IO_CLASS)
        return True
    except (KeyError, OSError, zipfile.BadZipFile):
        return False


def is_streaming(options: PipelineOptions) -> bool:
    return bool(options.view_as(StandardOptions).streaming)
