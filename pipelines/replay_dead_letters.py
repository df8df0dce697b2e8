"""Put dead letters back on the input topic once their cause is fixed.

A misconfiguration - a revoked token (`http_401`), a wrong contract
(`http_422`, `invalid_response`), a service that was down (`deadline`,
`retries_exhausted`) - dead-letters events that were fine. Each dead letter
keeps the event's original bytes (`transforms/outputs.dead_letter_record`), so
once the operator has fixed the cause this command re-publishes the chosen
ones to the input topic and the job enriches them like any new event:

    python -m pipelines.replay_dead_letters --bootstrap_servers 127.0.0.1:9092 \\
        --dlq_topic payments-dlq --input_topic payments \\
        --reason http_401 --reason deadline --since 2024-05-01T09:00:00Z [--dry_run]

It reads the dead-letter topic once, from its beginning (or from the offsets
whose timestamps reach `--since`) up to the end offsets it sees at start, and
never waits for new records. It reads with assign() and commits nothing, so
the job's consumer group is not touched. A letter is selected when its
`reason` is one of `--reason` (exact codes), its `stage` is `--stage` (if
given), its `dead_lettered_at_ms` is in [`--since`, `--until`) and its
`source.topic` is `--source_topic` (default: `--input_topic`). A selected
letter's payload goes back to the partition it came from, under the input
record's key (both kept in the dead letter; letters written before the key was
kept go back under their own key, the event id), through an idempotent
producer (acks=all). Letters whose payload was cut at
the dead-letter size limit (`payload_truncated`) and records that are not
dead-letter documents are never re-published, only counted. `--dry_run`
selects and counts without producing.

Replaying re-publishes records, so consumers of the output topic see the
job's at-least-once semantics: an event whose earlier attempt did reach the
output (or that is replayed twice) appears again, under the same key (its
event id). A replayed event that fails again becomes a new dead letter: a
second run over the same range re-publishes the old letters again, so give
a second pass `--since` = the time of the first one.

Exit codes: 0 done (summary printed); 1 a record was not delivered or Kafka
failed during the pass (records before it may have been re-published);
2 refused at start (an option, Kafka unreachable, a topic missing), nothing
produced.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NoReturn

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipelines.command import exit_with
from pipelines.options import ConfigError
from pipelines.preflight import check_kafka
from transforms.kafka.connection import SECURITY_KEYS, KafkaConnection, consumer_config, parse_properties, producer_config

STAGES = ("parse", "enrich")
# The consumer never joins this group nor commits for it; librdkafka only needs a name.
REPLAY_GROUP = "payment-enrichment-replay"
TIMEOUT_S = 10.0
# A pass with no record and no end-of-partition event for this long has lost the broker.
IDLE_TIMEOUT_S = 60.0
# `--since` seeks by record timestamp, which the job's producer sets just after
# `dead_lettered_at_ms` on the same clock; the margin covers a LogAppendTime topic
# whose broker clock runs behind the workers'. The field itself decides selection.
SEEK_MARGIN_MS = 5 * 60 * 1000
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class ReplayFailed(RuntimeError):
    """The pass started but could not finish: a delivery failed or Kafka stopped answering."""


class _Source(msgspec.Struct):
    topic: str
    partition: int
    offset: int


class LetterDocument(msgspec.Struct):
    """The fields of a dead letter (transforms/outputs.dead_letter_record) a replay needs."""
    reason: str
    stage: str
    source: _Source
    dead_lettered_at_ms: int
    payload_bytes: int
    payload_truncated: bool
    payload: str
    payload_encoding: str
    record_key: str | None = None              # the input record's key (absent in older letters)
    record_key_encoding: str | None = None


_decode_letter = msgspec.json.Decoder(LetterDocument).decode


@dataclass(frozen=True)
class Selection:
    reasons: frozenset[str]
    stage: str | None
    since_ms: int | None
    until_ms: int | None
    source_topic: str

    def matches(self, letter: LetterDocument) -> bool:
        return (letter.reason in self.reasons
                and (self.stage is None or letter.stage == self.stage)
                and (self.since_ms is None or letter.dead_lettered_at_ms >= self.since_ms)
                and (self.until_ms is None or letter.dead_lettered_at_ms < self.until_ms)
                and letter.source.topic == self.source_topic)


@dataclass
class Counts:
    read: int = 0
    selected: int = 0           # matched the selection (= re-published + skipped as truncated)
    republished: int = 0        # delivered (dry run: would be produced)
    truncated: int = 0
    unreadable: int = 0
    not_matching: int = 0


def epoch_ms(text: str) -> int:
    """`--since` / `--until`: epoch milliseconds, or ISO-8601 (UTC unless it names an offset)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time or epoch milliseconds: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(" ".join(message.split()))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m pipelines.replay_dead_letters", allow_abbrev=False,
                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--bootstrap_servers", default="127.0.0.1:9092", help="Kafka bootstrap servers.")
    parser.add_argument("--dlq_topic", default="payments-dlq", help="Topic of dead letters to read.")
    parser.add_argument("--input_topic", default="payments", help="The job's input topic to re-publish to.")
    parser.add_argument("--kafka_property", action="append", default=[], metavar="KEY=VALUE",
                        help="Extra librdkafka client property, repeatable (as the job's, e.g. security.protocol=SSL).")
    parser.add_argument("--reason", action="append", required=True, metavar="CODE",
                        help="Replay letters with this reason code (exact), repeatable.")
    parser.add_argument("--stage", choices=STAGES, default=None, help="Only letters of this stage.")
    parser.add_argument("--since", type=epoch_ms, default=None, metavar="TIME",
                        help="Only letters dead-lettered at or after TIME (ISO-8601, UTC by default, or epoch ms).")
    parser.add_argument("--until", type=epoch_ms, default=None, metavar="TIME",
                        help="Only letters dead-lettered before TIME.")
    parser.add_argument("--source_topic", default=None,
                        help="Only letters read from this topic (default: --input_topic).")
    parser.add_argument("--dry_run", action="store_true", help="Select and count, produce nothing.")
    return parser.parse_args(argv)


def selection(args: argparse.Namespace) -> Selection:
    for name in ("bootstrap_servers", "dlq_topic", "input_topic", "source_topic"):
        if getattr(args, name) == "":
            raise ConfigError(f"--{name} must not be empty")
    if args.dlq_topic == args.input_topic:
        raise ConfigError(f"--dlq_topic and --input_topic are both {args.input_topic!r}")
    if any(not reason.strip() for reason in args.reason):
        raise ConfigError("--reason must not be empty")
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise ConfigError("--since must be before --until")
    return Selection(frozenset(args.reason), args.stage, args.since, args.until,
                     args.source_topic or args.input_topic)


def connection(args: argparse.Namespace) -> KafkaConnection:
    try:
        props = parse_properties(args.kafka_property)
    except ValueError as e:
        raise ConfigError(f"--kafka_property must be KEY=VALUE ({e})") from None
    security = {k: v for k, v in props.items() if k in SECURITY_KEYS}
    extra = {k: v for k, v in props.items() if k not in SECURITY_KEYS}
    return KafkaConnection(args.bootstrap_servers, group_id=REPLAY_GROUP, security=security, properties=extra)


def _bytes(text: str, encoding: str | None, what: str) -> bytes:
    if encoding == "utf-8":
        return text.encode("utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as e:
            raise ValueError(f"bad base64 {what}: {e}") from None
    raise ValueError(f"unknown {what} encoding {encoding!r}")


def original_payload(letter: LetterDocument) -> bytes:
    """The payload's bytes; ValueError if they cannot be the ones the job wrote."""
    payload = _bytes(letter.payload, letter.payload_encoding, "payload")
    if not letter.payload_truncated and len(payload) != letter.payload_bytes:
        raise ValueError(f"payload has {len(payload)} bytes, payload_bytes says {letter.payload_bytes}")
    return payload


def readable(value: bytes | None, dlq_key: bytes | None = None) -> tuple[LetterDocument, bytes, bytes | None] | None:
    """The dead letter, its payload and the key to re-publish it under (the input record's, else
    the dead letter's own), or None if `value` is not a dead-letter document."""
    try:
        letter = _decode_letter(value or b"")
        key = (_bytes(letter.record_key, letter.record_key_encoding, "record_key")
               if letter.record_key is not None else dlq_key)
        return letter, original_payload(letter), key
    except (msgspec.DecodeError, ValueError):  # msgspec.ValidationError is a DecodeError
        return None


def read_ranges(consumer: Consumer, topic: str, since_ms: int | None) -> dict[int, tuple[int, int]]:
    """Partition -> [start, end) offsets: from the log start (or the first record stamped at or
    after `since_ms` minus SEEK_MARGIN_MS) to the end now. The consumer reads read_committed
    (librdkafka's default), so the end is the last stable offset: the dead letters of a
    transaction still open (an exactly-once job at work) are left for a later pass."""
    metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    ranges = {}
    for partition in sorted(metadata.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S, cached=False)
        ranges[partition] = (low, high)
    if since_ms is not None:
        wanted = [TopicPartition(topic, p, max(since_ms - SEEK_MARGIN_MS, 0)) for p in ranges]
        for tp in consumer.offsets_for_times(wanted, timeout=TIMEOUT_S):
            if tp.error is not None:
                raise KafkaException(tp.error)
            low, high = ranges[tp.partition]
            ranges[tp.partition] = (high if tp.offset < 0 else max(low, tp.offset), high)  # < 0: none that late
    return ranges


def records(consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]]) -> Iterator[Message]:
    """The records of `ranges`, in offset order per partition. A partition is done at its end
    offset, or at an end-of-partition event (its end may be a transaction marker, which no
    record reaches)."""
    pending = {p: end for p, (start, end) in ranges.items() if start < end}
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in pending])
    last_progress = time.monotonic()
    while pending:
        batch = consumer.consume(num_messages=1000, timeout=0.5)
        if batch:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > IDLE_TIMEOUT_S:
            raise ReplayFailed(f"{topic}: nothing read from partition(s) {sorted(pending)} "
                               f"for {IDLE_TIMEOUT_S:.0f} s")
        for msg in batch:
            partition, err = msg.partition(), msg.error()
            if partition not in pending:
                continue
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(err)
            offset = msg.offset() or 0
            if err is None and offset < pending[partition]:
                yield msg
                offset += 1
            if err is not None or offset >= pending[partition]:
                del pending[partition]
                consumer.pause([TopicPartition(topic, partition)])


class Republisher:
    """Produces to `topic` and keeps count of deliveries and failures. A letter read from this very
    topic goes back to the partition it came from (when the topic still has it), so the order of
    its key's events is kept as the original producer's partitioner made it."""

    def __init__(self, conn: KafkaConnection, topic: str, partitions: int) -> None:
        self._producer = Producer(producer_config(conn))
        self._topic, self._partitions = topic, partitions
        self.produced = self.delivered = self.failed = 0
        self.first_error: str | None = None

    def send(self, letter: LetterDocument, key: bytes | None, value: bytes) -> None:
        source = letter.source
        at = source.partition if source.topic == self._topic and 0 <= source.partition < self._partitions else -1
        while True:
            try:
                self._producer.produce(self._topic, value, key, partition=at, on_delivery=self._report)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.1)
        self.produced += 1
        self._producer.poll(0)

    def finish(self) -> None:
        """Waits until every record is delivered or has failed (message.timeout.ms bounds it)."""
        while self._producer.flush(1.0) > 0:
            pass
        if self.failed:
            raise ReplayFailed(f"{self.failed} of {self.produced} record(s) not delivered to {self._topic} "
                               f"({self.delivered} were; first error: {self.first_error})")

    def _report(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        self.first_error = self.first_error or err.str()


def replay(messages: Iterable[Message], chosen: Selection, publisher: Republisher | None) -> Counts:
    """Sorts every record into the counts; re-publishes the selected ones unless `publisher` is None."""
    counts = Counts()
    for msg in messages:
        counts.read += 1
        letter = readable(msg.value(), msg.key())
        if letter is None:
            counts.unreadable += 1
        elif not chosen.matches(letter[0]):
            counts.not_matching += 1
        elif letter[0].payload_truncated:
            counts.selected += 1
            counts.truncated += 1
        else:
            counts.selected += 1
            if publisher is not None:
                publisher.send(letter[0], letter[2], letter[1])
    if publisher is not None:
        publisher.finish()
        counts.republished = publisher.delivered
    else:
        counts.republished = counts.selected - counts.truncated
    return counts


def run(args: argparse.Namespace) -> Counts:
    chosen = selection(args)
    conn = connection(args)
    check_kafka(conn, [args.dlq_topic, args.input_topic])
    consumer = Consumer(consumer_config(conn))
    try:
        ranges = read_ranges(consumer, args.dlq_topic, chosen.since_ms)
        partitions = len(consumer.list_topics(args.input_topic, timeout=TIMEOUT_S).topics[args.input_topic].partitions)
        publisher = None if args.dry_run else Republisher(conn, args.input_topic, partitions)
        return replay(records(consumer, args.dlq_topic, ranges), chosen, publisher)
    finally:
        consumer.close()


def render(counts: Counts, args: argparse.Namespace) -> str:
    verb = "would re-publish (dry run)" if args.dry_run else "re-published"
    rows = [("selected", counts.selected), (verb, counts.republished),
            ("skipped as truncated", counts.truncated), ("skipped as unreadable", counts.unreadable),
            ("not matching", counts.not_matching)]
    width = max(len(label) for label, _ in rows)
    head = f"{args.dlq_topic} -> {args.input_topic}: {counts.read} record(s) read"
    return "\n".join([head, *(f"  {label:<{width}}  {n}" for label, n in rows)])


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        counts = run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except ReplayFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KafkaException as e:
        err = e.args[0] if e.args else e
        print(f"error: Kafka failed during the pass: {err.str() if isinstance(err, KafkaError) else err}",
              file=sys.stderr)
        return EXIT_FAILED
    print(render(counts, args))
    return EXIT_OK


if __name__ == "__main__":
    exit_with(main)
