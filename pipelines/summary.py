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

    def print(self) -> None:
        table = Table(title=f"payment enrichment: {self.wall_s:.1f} s")
        table.add_column("metric")
        table.add_column("value", justify="right")
        rows = [("events read", self.counter("events_in")),
                ("events scored", self.counter("events_scored")),
                ("dead letters (parse)", self.counter("parse_dead_letters")),
                ("dead letters (scoring)", self.counter("score_dead_letters")),
                ("records written", self.counter("records_written")),
                ("batches", self.counter("batches")),
                ("requests by outcome", ", ".join(f"{k}={self.counter('requests', outcome=k)}"
                                                   for k in REQUEST_OUTCOMES)),
                ("retries", self.counter("retries")),
                ("time throttled (s)", f"{self.counter('throttled_ms') / 1000:.1f}"),
                ("committed-offset advances", self.counter("offset_commits"))]
        for name, dist in sorted(self.distributions.items()):
            if dist.get("count"):
                rows.append((f"{name} mean/max", f"{dist['mean']:.1f} / {dist['max']:.0f}"))
        for name, value in sorted(self.gauges.items()):
            rows.append((f"{name} (last)", value))
        d = self.derived()
        rows += [("scored events/s", f"{d['events_per_s']:.0f}"),
                 ("attempts per batch", f"{d['attempts_per_batch']:.3f}"),
                 ("429 share of attempts", f"{d['share_429']:.2%}")]
        for name, value in rows:
            table.add_row(name, str(value))
        Console().print(table)


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
