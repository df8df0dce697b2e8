"""The end-of-run summary: Beam metrics folded into one table and one JSON document.

Counters are stored under their Beam names (`enrich/events_in`, as the JSON
shows them) and looked up by catalogue name (`summary.counter("events_in")`),
so a misspelt name fails instead of reading as zero.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from apache_beam.runners.runner import PipelineResult
from rich.console import Console
from rich.table import Table

from transforms.enrichment.transform import REQUEST_OUTCOMES
from transforms.monitoring.catalogue import CATALOGUE


@dataclass
class RunSummary:
    wall_s: float
    counters: dict[str, int] = field(default_factory=dict)
    distributions: dict[str, dict[str, float]] = field(default_factory=dict)
    gauges: dict[str, int] = field(default_factory=dict)

    def counter(self, name: str, **labels: object) -> int:
        """A catalogued counter's total (`counter("requests", outcome="429")`); KeyError if not catalogued."""
        return self.counters.get(CATALOGUE[name].beam_key(**labels), 0)

    @property
    def attempts(self) -> int:
        return sum(self.counter("requests", outcome=k) for k in REQUEST_OUTCOMES)

    def add(self, other: RunSummary) -> None:
        """Fold in the summary of a later run of the same job (a drain in chunks)."""
        self.wall_s += other.wall_s
        for name, value in other.counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        for name, d in other.distributions.items():
            mine = self.distributions.get(name)
            if mine is None:
                self.distributions[name] = dict(d)
                continue
            mine.update(count=mine["count"] + d["count"], sum=mine["sum"] + d["sum"],
                        min=min(mine["min"], d["min"]), max=max(mine["max"], d["max"]))
            mine["mean"] = mine["sum"] / mine["count"]
        self.gauges.update(other.gauges)

    def committed_in_kafka(self, topic: str, offsets: dict[int, int]) -> None:
        """The group's committed offsets as Kafka has them at the end, in place of the `committed_offset`
        gauges: Beam reports a gauge from some bundle of the run, not necessarily the last (a drain of
        several reads per partition showed the first read's offsets)."""
        gauge = CATALOGUE["committed_offset"]
        prefix = gauge.beam_key(topic=topic, partition="")
        self.gauges = {name: value for name, value in self.gauges.items() if not name.startswith(prefix)}
        self.gauges.update({gauge.beam_key(topic=topic, partition=p): o for p, o in offsets.items()})

    def derived(self) -> dict[str, float]:
        batches = self.counter("batches")
        attempts = self.attempts
        return {
            "events_per_s": self.counter("events_scored") / self.wall_s if self.wall_s else 0.0,
            "attempts_per_batch": attempts / batches if batches else 0.0,
            "share_429": self.counter("requests", outcome="429") / attempts if attempts else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), derived=self.derived())

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    def rows(self) -> list[tuple[str, str]]:
        """The table: per-run totals, partitions folded per topic, rows that are zero left out
        where zero is the normal case (the JSON keeps everything)."""
        c, wall = self.counter, self.wall_s
        d, latency = self.derived(), self._dist("request_latency_ms")
        rows = [("events read", f"{c('events_in'):,}"),
                ("events scored", f"{c('events_scored'):,} ({d['events_per_s']:,.0f}/s)"),
                ("dead letters", f"{c('parse_dead_letters') + c('score_dead_letters'):,} "
                                 f"(parse {c('parse_dead_letters'):,}, scoring {c('score_dead_letters'):,})"),
                ("records written", f"{c('records_written'):,}"),
                ("batches", f"{c('batches'):,} ({self._dist('batch_size').get('mean', 0):.1f} events each)"),
                ("requests", ", ".join(f"{k} {n:,}" for k in REQUEST_OUTCOMES if (n := c("requests", outcome=k)))
                 or "0"),
                ("attempts per batch", f"{d['attempts_per_batch']:.3f} ({d['share_429']:.2%} answered 429)"),
                ("request latency", f"mean {latency.get('mean', 0):.0f} ms, max {latency.get('max', 0):.0f} ms"),
                ("time throttled", f"{c('throttled_ms') / 1000:.1f} s "
                                   f"({c('throttled_ms') / 1000 / wall if wall else 0:.0%} of wall time)")]
        rows += [(label, f"{c(name):,}") for label, name in _WHEN_NONZERO if c(name)]
        rows += [(f"committed: {topic}", text) for topic, text in self._committed_by_topic()]
        return rows

    def _dist(self, name: str) -> dict[str, float]:
        return self.distributions.get(CATALOGUE[name].beam_key(), {})

    def _committed_by_topic(self) -> list[tuple[str, str]]:
        """The `committed_offset` gauges folded per topic: partitions, their sum and the lowest one."""
        prefix = CATALOGUE["committed_offset"].beam_key(topic="", partition="").rstrip("/")
        by_topic: dict[str, dict[int, int]] = {}
        for name, value in self.gauges.items():
            if name.startswith(prefix + "/"):
                topic, _, partition = name[len(prefix) + 1:].rpartition("/")
                by_topic.setdefault(topic, {})[int(partition)] = value
        out = []
        for topic, offsets in sorted(by_topic.items()):
            lowest = min(offsets, key=lambda p: (offsets[p], p))
            out.append((topic, f"{len(offsets)} partitions, offsets {sum(offsets.values()):,} in all "
                               f"(lowest: partition {lowest} at {offsets[lowest]:,}); "
                               f"{self.counter('offset_commits'):,} advances"))
        return out

    def print(self) -> None:
        table = Table(title=f"payment enrichment: {self.wall_s:.1f} s")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in self.rows():
            table.add_row(name, value)
        Console().print(table)


#: Rows shown only when not zero: zero is the normal case.
_WHEN_NONZERO = (("retries", "retries"), ("offsets without a record", "skipped_offsets"),
                 ("timestamps clamped", "clamped_timestamps"), ("delivery errors", "delivery_errors"),
                 ("transactions", "transactions"), ("duplicates dropped", "duplicates_dropped"))


def summarize(result: PipelineResult, wall_s: float) -> RunSummary:
    summary = RunSummary(wall_s=wall_s)
    metrics = result.metrics().query()
    for m in metrics["counters"]:
        key = f"{m.key.metric.namespace}/{m.key.metric.name}"
        summary.counters[key] = summary.counters.get(key, 0) + int(_value(m))
    for m in metrics["distributions"]:
        d = _value(m)
        if d is not None and d.count:
            summary.distributions[f"{m.key.metric.namespace}/{m.key.metric.name}"] = dict(
                count=d.count, sum=d.sum, min=d.min, max=d.max, mean=d.sum / d.count)
    for m in metrics.get("gauges", []):
        g = _value(m)
        if g is not None:
            summary.gauges[f"{m.key.metric.namespace}/{m.key.metric.name}"] = int(g.value)
    return summary


def _value(metric_result: Any) -> Any:
    """Committed if the runner reports it, else attempted (portable runners)."""
    committed = metric_result.committed
    return committed if committed is not None else metric_result.attempted
