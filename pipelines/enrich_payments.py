"""The payment-enrichment job: Kafka -> parse -> bounded batches -> throttled scoring -> Kafka.

    python -m pipelines.enrich_payments --runner=DirectRunner \
        --bootstrap_servers=127.0.0.1:9092 --scoring_url=http://127.0.0.1:8080

Without --streaming it drains the backlog that exists at start (from the
group's committed offsets to the end offsets) and exits; with --streaming it
follows the topic forever. Offsets are committed only after the results and
dead letters of those records have been acknowledged by Kafka.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from pipelines.options import ConfigError, EnrichPaymentsOptions, is_streaming, parse_options, validate
from pipelines.preflight import check_kafka, check_scoring_url, load_token
from pipelines.summary import RunSummary, summarize
from transforms.control.batching import BatchPolicy
from transforms.kafka_config import SECURITY_KEYS, KafkaConnection, parse_properties
from transforms.kafka_read import ReadFromKafka
from transforms.kafka_write import WriteToKafka
from transforms.offset_commit import CommitOffsets
from transforms.outputs import dead_letter_record, result_record
from transforms.parse import ParseEvents
from transforms.scoring_runtime import ScoringConfig
from transforms.throttled_scoring import ScoreInBatches

LOG = logging.getLogger(__name__)


class EnrichPayments(beam.PTransform):
    """The whole data path as one composite, so tests and the benchmark reuse it.

    `score` is the scoring step (ParsedEvent -> outputs `scored` and
    `dead_letters`); by default ours, `ScoreInBatches`. The benchmark swaps in
    baseline clients here and keeps everything else identical.
    """

    def __init__(self, conn: KafkaConnection, opts: EnrichPaymentsOptions, streaming: bool,
                 score: Optional[beam.PTransform] = None) -> None:
        super().__init__()
        self._conn, self._opts, self._streaming = conn, opts, streaming
        self._score = score or default_scoring(opts, streaming)

    def expand(self, pbegin):
        o = self._opts
        records = pbegin | "ReadKafka" >> ReadFromKafka(
            self._conn, o.input_topic, bounded=not self._streaming, max_records=o.max_records)
        parsed = records | "ParseEvents" >> ParseEvents()
        scored = parsed.events | "Score" >> self._score
        out_topic, dlq_topic = o.output_topic, o.dlq_topic
        outbound = (
            (scored.scored | "ResultRecords" >> beam.Map(result_record, out_topic),
             parsed.dead_letters | "ParseDeadLetters" >> beam.Map(dead_letter_record, dlq_topic),
             scored.dead_letters | "ScoreDeadLetters" >> beam.Map(dead_letter_record, dlq_topic))
            | "AllOutputs" >> beam.Flatten())
        acks = outbound | "WriteKafka" >> WriteToKafka(self._conn)
        return acks | "CommitOffsets" >> CommitOffsets(self._conn)


def kafka_connection(opts: EnrichPaymentsOptions) -> KafkaConnection:
    props = parse_properties(opts.kafka_property)
    security = {k: v for k, v in props.items() if k in SECURITY_KEYS}
    extra = {k: v for k, v in props.items() if k not in SECURITY_KEYS}
    return KafkaConnection(opts.bootstrap_servers, group_id=opts.group_id, security=security, properties=extra)


def scoring_config(opts: EnrichPaymentsOptions) -> ScoringConfig:
    return ScoringConfig(
        url=opts.scoring_url, max_in_flight=opts.max_in_flight, initial_rate=opts.initial_rate,
        min_rate=opts.min_rate, max_rate=opts.max_rate, max_attempts=opts.max_attempts,
        deadline_s=opts.batch_deadline, retry_budget_ratio=opts.retry_budget_ratio,
        request_timeout_s=opts.request_timeout,
        token=load_token(opts.scoring_token_env, opts.scoring_token_file))


def default_scoring(opts: EnrichPaymentsOptions, streaming: bool) -> ScoreInBatches:
    policy = BatchPolicy(opts.batch_size, opts.max_batch_bytes, opts.max_batch_wait if streaming else None)
    return ScoreInBatches(scoring_config(opts), policy, opts.num_shards, streaming=streaming)


def build(pipeline: beam.Pipeline, options: PipelineOptions, score: Optional[beam.PTransform] = None) -> None:
    opts = options.view_as(EnrichPaymentsOptions)
    pipeline | "EnrichPayments" >> EnrichPayments(kafka_connection(opts), opts, is_streaming(options), score)


def run(argv: Optional[List[str]] = None, score: Optional[beam.PTransform] = None) -> RunSummary:
    """Validates, checks the environment, runs the job and returns its summary.

    `score` replaces the scoring step (the benchmark's baselines use it).
    """
    options = parse_options(argv)
    opts = options.view_as(EnrichPaymentsOptions)
    validate(opts)
    conn = kafka_connection(opts)
    check_kafka(conn, [opts.input_topic, opts.output_topic, opts.dlq_topic])
    check_scoring_url(opts.scoring_url)
    started = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    build(pipeline, options, score)
    result: PipelineResult = pipeline.run()
    result.wait_until_finish()
    summary = summarize(result, time.monotonic() - started)
    summary.print()
    if opts.summary_path:
        summary.write_json(opts.summary_path)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
