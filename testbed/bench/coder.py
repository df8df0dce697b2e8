"""What encoding a list of parsed events costs, `EventListCoder` against Beam's default for a list
(each element pickled): microseconds per event for encode + decode, in pairs, in one process.

    python -m testbed.bench.coder [--events 100] [--pairs 7]

A runner pays this where the job's lists cross to the stateful enrichment step
and wherever Beam samples an element's size.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

from apache_beam.coders import Coder, typecoders
from apache_beam.typehints import typehints

from testbed.kafka.synthetic_events import encode, make_event
from transforms.contract.loader import DEFAULT_CONTRACT, load_contract
from transforms.events import EventListCoder, ParsedEvent
from transforms.kafka.records import SourcePosition

ROUNDS = 200


def parsed_events(count: int) -> list[ParsedEvent]:
    schema, rng = load_contract(DEFAULT_CONTRACT).schema, random.Random(28)
    raws = [encode(make_event(i, rng)) for i in range(count)]
    return [ParsedEvent(schema.parse(raw), raw, SourcePosition("in", 0, i, i), 1_700_000_000_000 + i, b"k")
            for i, raw in enumerate(raws)]


def us_per_event(coder: Coder, events: list[ParsedEvent]) -> float:
    started = time.perf_counter()
    for _ in range(ROUNDS):
        coder.decode(coder.encode(events))
    return (time.perf_counter() - started) / ROUNDS / len(events) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args(argv)
    events, ours, beams = parsed_events(args.events), EventListCoder(), typecoders.registry.get_coder(
        typehints.List[Any])
    pairs = [(us_per_event(ours, events), us_per_event(beams, events)) for _ in range(args.pairs)]
    print(json.dumps({"events_per_list": args.events, "pairs": args.pairs,
                      "event_list_coder_us": round(statistics.median(a for a, _ in pairs), 2),
                      "beam_default_us": round(statistics.median(b for _, b in pairs), 2),
                      "ratio_median": round(statistics.median(a / b for a, b in pairs), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
