"""Synthetic payment-event producer: a paced stream or a backlog, optionally with bad records.

    python -m testbed.kafka.produce --bootstrap_servers 127.0.0.1:9092 --topic payments \\
        [--partitions 8 --create_topic] [--rate 100000/min] [--duration 120s | --count N]
    python -m testbed.kafka.produce ... --backlog 1000000 [--malformed_fraction 0.01] [--manifest ids.jsonl]

Pacing is a token budget (`rate * elapsed - sent` per 10 ms tick), so the long-run
rate holds even when a tick overruns. Without --duration/--count it runs until Ctrl-C.
Exit status: 0 all delivered, 1 delivery or broker errors, 2 bad flags.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, NoReturn

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from testbed.kafka import synthetic_events
from testbed.kafka.admin import admin_client, create_topic

DEFAULT_RATE_PER_S = 100_000 / 60  # the seed's 100,000 events/min
TICK_S = 0.01
PROGRESS_EVERY_S = 0.25
PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,  # implies acks=all; no duplicates from internal retries
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "partitioner": "murmur2_random",  # same key -> partition mapping as the Java client
    "queue.buffering.max.messages": 500_000,
    "message.timeout.ms": 60_000,
    "log_level": 3,  # hide transient warnings (e.g. PID retries right after broker start)
}

ProgressFn = Callable[[int, float], None]  # (events sent, seconds elapsed)


class TopicMissingError(RuntimeError):
    """The topic does not exist and the broker will not auto-create it."""


@dataclass
class ProduceSummary:
    topic: str
    produced: int = 0
    delivered: int = 0
    malformed: int = 0
    errors: int = 0
    first_error: str | None = None
    elapsed_s: float = 0.0
    txn_ids: list[str] = field(default_factory=list)  # valid events, in produce order
    malformed_ids: dict[str, str] = field(default_factory=dict)  # txn_id -> malformed kind

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.delivered == self.produced

    @property
    def rate_per_s(self) -> float:
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        errors = f"{self.errors} delivery errors (first: {self.first_error})" if self.errors else "0 delivery errors"
        return (f"produced {self.produced:,} events ({self.malformed:,} malformed) to {self.topic} "
                f"in {self.elapsed_s:.2f} s = {self.rate_per_s:,.0f} events/s; "
                f"delivered {self.delivered:,}; {errors}")

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.errors += 1
        self.first_error = self.first_error or str(err)


def _malformed_every(fraction: float) -> Callable[[int], bool]:
    """Exactly floor(n * fraction) of the first n sequence numbers, evenly spread."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"malformed_fraction must be within [0, 1], got {fraction}")
    ratio = Fraction(fraction).limit_denominator(1_000_000)
    num, den = ratio.numerator, ratio.denominator
    return lambda seq: (seq + 1) * num // den > seq * num // den


def _check_topic(bootstrap: str, topic: str) -> None:
    try:
        topics = admin_client(bootstrap).list_topics(timeout=10).topics
    except KafkaException as exc:
        raise KafkaException(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    if topic not in topics:
        raise TopicMissingError(f"topic {topic!r} does not exist on {bootstrap} (auto-create is off): create it or pass --create_topic")


def produce_events(
    bootstrap: str,
    topic: str,
    count: int | None = None,
    rate_per_s: float | None = None,
    duration_s: float | None = None,
    malformed_fraction: float = 0.0,
    seed: int = 0,
    *,
    run_id: str | None = None,
    accounts: int = synthetic_events.DEFAULT_ACCOUNTS,
    create_partitions: int | None = None,
    manifest: Path | None = None,
    keep_ids: bool = True,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    producer_config: dict[str, Any] | None = None,
    flush_timeout_s: float = 60.0,
) -> ProduceSummary:
    """Produce `count` events (or for `duration_s`, or until `stop`), paced at `rate_per_s`
    if given, else as fast as possible; flush and return what was delivered.

    A rate with a duration and no count yields exactly round(rate * duration) events.

    `run_id` (default random) makes txn_ids unique across runs; the same seed and
    run_id give the same events apart from event_time.
    """
    if count is None and duration_s is None and stop is None:
        raise ValueError("give count, duration_s or a stop event, or this never ends")
    if create_partitions:
        create_topic(bootstrap, topic, create_partitions)
    else:
        _check_topic(bootstrap, topic)
    is_malformed = _malformed_every(malformed_fraction)
    run_id = run_id or uuid.uuid4().hex[:8]
    rng = random.Random(seed)
    summary = ProduceSummary(topic)
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG, **(producer_config or {})})
    manifest_file: IO[str] | None = manifest.open("w") if manifest else None

    def send(seq: int) -> None:
        event = synthetic_events.make_event(seq, rng, run_id=run_id, accounts=accounts)
        kind: str | None = None
        if is_malformed(seq):
            kind = synthetic_events.malformed_kind(summary.malformed)
            value = synthetic_events.corrupt(event, kind, rng)
            summary.malformed += 1
            if keep_ids:
                summary.malformed_ids[event["txn_id"]] = kind
        else:
            value = synthetic_events.encode(event)
            if keep_ids:
                summary.txn_ids.append(event["txn_id"])
        while True:
            try:
                producer.produce(topic, value, synthetic_events.message_key(event, kind), on_delivery=summary.on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.05)
        summary.produced += 1
        if manifest_file:
            manifest_file.write(json.dumps({"seq": seq, "txn_id": event["txn_id"], "kind": kind or "valid"}) + "\n")

    limit = count if count is not None else (round(rate_per_s * duration_s) if rate_per_s and duration_s else None)
    started = time.monotonic()
    last_report = started
    try:
        seq = 0
        while (limit is None or seq < limit) and not (stop and stop.is_set()):
            tick = time.monotonic()
            elapsed = tick - started
            final = duration_s is not None and elapsed >= duration_s
            horizon = elapsed if duration_s is None else min(elapsed, duration_s)  # last tick: exactly rate * duration
            budget = int(rate_per_s * horizon) + 1 if rate_per_s else (seq if final else seq + 10_000)
            target = budget if limit is None else min(limit, budget)
            while seq < target:
                send(seq)
                seq += 1
            producer.poll(0)
            if progress and tick - last_report >= PROGRESS_EVERY_S:
                progress(summary.produced, elapsed)
                last_report = tick
            if final:
                break
            if rate_per_s:
                time.sleep(max(0.0, TICK_S - (time.monotonic() - tick)))
        undelivered = producer.flush(flush_timeout_s)
    finally:
        if manifest_file:
            manifest_file.close()
    summary.elapsed_s = time.monotonic() - started
    if undelivered:
        summary.errors += undelivered
        summary.first_error = summary.first_error or f"{undelivered} still queued after a {flush_timeout_s:.0f} s flush"
    if progress:
        progress(summary.produced, summary.elapsed_s)
    return summary


# ---- CLI -------------------------------------------------------------------------------

_RATE_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float:
    """'100000/min', '1667/s' or a bare number (per second) -> events per second."""
    match = re.fullmatch(r"\s*([\d_.]+)\s*(?:/\s*([a-z]+))?\s*", text.lower())
    if not match or (match.group(2) or "s") not in _RATE_UNITS:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}: use e.g. 100000/min or 1667/s")
    rate = float(match.group(1)) / _RATE_UNITS[match.group(2) or "s"]
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"rate must be positive, got {text!r}")
    return rate


def parse_duration(text: str) -> float:
    """'120s', '2m', '500ms', '1h' or bare seconds -> seconds."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in _DURATION_UNITS:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 120s, 2m, 500ms")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _positive_int(text: str) -> int:
    value = int(text.replace("_", "")) if text.replace("_", "").isdigit() else 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m testbed.kafka.produce", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap_servers", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="payments")
    parser.add_argument("--partitions", type=_positive_int, default=8, help="with --create_topic (default 8)")
    parser.add_argument("--create_topic", action="store_true", help="create the topic if it does not exist")
    parser.add_argument("--rate", type=parse_rate, default=None, help="e.g. 100000/min (default) or 1667/s")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--duration", type=parse_duration, help="e.g. 120s; default: until Ctrl-C")
    amount.add_argument("--count", type=_positive_int, help="stop after N events")
    amount.add_argument("--backlog", type=_positive_int, help="N events as fast as possible (no pacing)")
    parser.add_argument("--malformed_fraction", type=float, default=0.0, help="share of bad records, e.g. 0.01")
    parser.add_argument("--accounts", type=_positive_int, default=synthetic_events.DEFAULT_ACCOUNTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run_id", default=None, help="txn_id infix (default: random)")
    parser.add_argument("--manifest", type=Path, help="write one JSON line {seq, txn_id, kind} per event")
    return parser


def _terminal_progress(total: int | None) -> tuple[ProgressFn, Callable[[], None]]:
    """A rich progress bar (sent, events/s, elapsed), shown from the first update, and its closer."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]:>10} ev/s"), TimeElapsedColumn(), transient=True)
    task = bar.add_task("produce", total=total, rate="-")

    def update(sent: int, elapsed: float) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=sent, rate=f"{sent / elapsed:,.0f}" if elapsed > 0 else "-")

    def close() -> None:
        if bar.live.is_started:
            bar.stop()

    return update, close


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.backlog and args.rate:
        parser.error("--backlog produces as fast as possible; drop --rate")
    if not 0.0 <= args.malformed_fraction <= 1.0:
        parser.error(f"--malformed_fraction must be within [0, 1], got {args.malformed_fraction}")
    rate = None if args.backlog else (args.rate or DEFAULT_RATE_PER_S)
    count = args.backlog or args.count
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    progress, close = _terminal_progress(count) if sys.stdout.isatty() else (None, lambda: None)
    try:
        summary = produce_events(
            args.bootstrap_servers, args.topic, count=count, rate_per_s=rate, duration_s=args.duration,
            malformed_fraction=args.malformed_fraction, seed=args.seed, run_id=args.run_id,
            accounts=args.accounts, create_partitions=args.partitions if args.create_topic else None,
            manifest=args.manifest, keep_ids=False, progress=progress, stop=stop,
        )
    except (KafkaException, TopicMissingError, TimeoutError, ValueError, OSError) as exc:
        print(f"produce: {exc}", file=sys.stderr)
        return 1
    finally:
        close()
    print(summary.line())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
