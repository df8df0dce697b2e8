"""Per-run figures and targets from the raw results (what the report and plots share)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from testbed.bench import metrics as m
from testbed.bench.scenarios import INTAKE_EPS, OURS_MAX_IN_FLIGHT, S4_MAX_IN_FLIGHT

# Targets for ours (docs/bench/history.md, "Benchmark").
S1_GOODPUT_SHARE = 0.97
S1_MAX_429_SHARE = 0.01
S1_MAX_AMPLIFICATION = 1.02
S1_MAX_P99_FACTOR = 2.0
MEMORY_MAX_GROWTH = 1.10
S3_SETTLE_429_S = 5.0
S3_RESTORE_S = 5.0
S3_RESTORE_SHARE = 0.90
S3_OVERLOAD_SHARE = 0.95
S3_MAX_OUTAGE_AMPLIFICATION = 1.10
S3_LATENCY_GOODPUT = 0.85
S3_LATENCY_MAX_503 = 0.02
S4_GOODPUT_SHARE = 0.95
S4_MAX_429_SHARE = 0.02
S4_FAIRNESS = 0.95
S2_MIN_OURS_OVER_POOL = 1.0
# A run whose Kafka lag ends below a second of intake ran out of backlog in the window: its
# goodput then measures what was left of the backlog, not the client.
S2_MIN_LAG_AT_END = INTAKE_EPS
EXCESS_429_SHARE = 0.02       # 429s above this share of attempts (3 s rolling) count as "excess"


@dataclass
class RunFigures:
    key: str
    client: str
    variant: str
    batch_size: int
    error: str | None
    steady: m.Window | None
    figures: dict[str, float | None] = field(default_factory=dict)


def _run_meta(record: dict[str, Any]) -> tuple[str, str, str, int]:
    run = record["run"]
    key = "-".join(x for x in (run["scenario"], run["variant"], run["client"]) if x)
    return key, run["client"], run["variant"], run["batch_size"]


def _rolling_share(samples: list[dict[str, Any]], width: float = 3.0) -> m.Series:
    r429 = dict(m.rolling(m.r429_series(samples), width))
    attempts = dict(m.rolling(m.attempts_series(samples), width))
    return [(t, (r429[t] / attempts[t]) if attempts.get(t) else 0.0) for t in sorted(r429)]


def fault_figures(samples: list[dict[str, Any]], faults: list[dict[str, Any]], batch_size: int,
                  end_s: float) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    good = m.rolling(m.goodput_series(samples), 3.0)
    cap = m.capacity_series(samples, batch_size)
    share = _rolling_share(samples)
    for i, f in enumerate(faults):
        start, stop = f["at_s"], f["at_s"] + f["duration_s"]
        nxt = faults[i + 1]["at_s"] if i + 1 < len(faults) else end_s
        tag = f["kind"]
        full_cap = m.value_at(cap, start - 1) or 0.0

        def at_least(share_of: float, capacity: float):
            return lambda t, v: v >= share_of * capacity
        if f["kind"] == "capacity":
            low_cap = full_cap * (f.get("factor") or 1.0)
            out[f"{tag}: excess 429s stop after drop (s)"] = m.time_until(
                share, start, stop, lambda t, v: v <= EXCESS_429_SHARE, hold_s=stop - start)
            out[f"{tag}: >=90% of reduced capacity after drop (s)"] = m.time_until(
                good, start, stop, at_least(0.9, low_cap))
        try:
            during = m.window(samples, start + 1, stop, batch_size)
            out[f"{tag}: goodput during fault / capacity"] = (during.goodput_eps or 0.0) / (during.capacity_eps or 1)
            out[f"{tag}: 503 share during fault"] = m.share_503(samples, start + 1, stop)
        except ValueError:
            pass
        out[f"{tag}: >=90% of capacity after restore (s)"] = m.time_until(good, stop, nxt, at_least(0.9, full_cap))
        out[f"{tag}: >=95% of capacity after restore (s)"] = m.time_until(good, stop, nxt, at_least(0.95, full_cap))
        try:
            through = m.window(samples, start, nxt, batch_size)
            out[f"{tag}: amplification fault start..next phase"] = through.amplification
            out[f"{tag}: 429 share fault start..next phase"] = through.share_429
        except ValueError:
            pass
    return out


def run_figures(record: dict[str, Any]) -> RunFigures:
    key, client, variant, batch = _run_meta(record)
    samples = record.get("samples") or []
    run = record["run"]
    rf = RunFigures(key, client, variant, batch, record.get("error"), None)
    if len(m.valid(samples)) < 3:
        rf.error = rf.error or "too few samples"
        return rf
    end = samples[-1]["t"]
    try:
        rf.steady = m.window(samples, run["warmup_s"], end, batch)
    except ValueError as exc:
        rf.error = rf.error or str(exc)
        return rf
    s = rf.steady
    unread = [(t, v) for t, v in m.unread_series(samples) if t >= run["warmup_s"]]
    lag = m.lag_series(samples)
    ages = m.age_series(samples)
    client_last = (samples[-1].get("client") or {})
    rf.figures = {
        "goodput (events/s)": s.goodput_eps,
        "goodput / capacity": (s.goodput_eps / s.capacity_eps) if s.goodput_eps is not None and s.capacity_eps
        else None,
        "attempts/s": s.attempts_rps,
        "429s/s": s.r429_rps,
        "429 share of attempts": s.share_429,
        "retry amplification": s.amplification,
        "p50 request latency (ms)": s.latency_p50_ms,
        "p99 request latency (ms)": s.latency_p99_ms,
        "service p99 latency (ms)": (samples[-1].get("service") or {}).get("latency_p99_ms"),
        "peak RSS (MB)": max((v for _, v in m.rss_series_mb(samples)), default=None),
        "mean in-flight": s.mean_in_flight,
        "unread backlog growth (events/s)": ((unread[-1][1] - unread[0][1]) / (unread[-1][0] - unread[0][0])
                                             if len(unread) >= 2 and unread[-1][0] > unread[0][0] else None),
        "Kafka lag at end (events)": lag[-1][1] if lag else None,
        "oldest uncommitted age at end (s)": ages[-1][1] if ages else None,
        "failed drains (pipeline restarts)": float(client_last.get("drains_failed") or 0),
        "startup to first request (s)": record.get("startup_s"),
    }
    rf.figures["service peak concurrency"] = (record.get("final_service") or {}).get("peak_concurrency")
    if run.get("workers", 1) > 1:
        shares = m.client_goodput(samples, run["warmup_s"], end)
        rf.figures["workers that scored"] = float(len(shares))
        rf.figures["Jain fairness of the workers' goodput"] = m.jain(list(shares.values()))
    if run.get("faults"):
        rf.figures.update(fault_figures(samples, run["faults"], batch, end))
    return rf


def _s2_targets(figs: list[RunFigures]) -> list[tuple[str, str, str, bool | None]]:
    """Per batch size: ours ÷ pool goodput, valid only if neither drain ran out of backlog."""
    rows: list[tuple[str, str, str, bool | None]] = []
    by_variant: dict[str, dict[str, RunFigures]] = {}
    for f in figs:
        if f.steady is not None:
            by_variant.setdefault(f.variant, {})[f.client] = f
    for variant, runs in by_variant.items():
        dry = False
        for f in runs.values():
            lag = f.figures.get("Kafka lag at end (events)")
            dry = dry or (lag is not None and lag < S2_MIN_LAG_AT_END)
            rows.append((f"backlog left at the end >= 1 s of intake ({S2_MIN_LAG_AT_END:,.0f} events)",
                         "n/a" if lag is None else f"{lag:,.0f}", f.key, None if lag is None else lag >= S2_MIN_LAG_AT_END))
        if "ours" in runs and "pool" in runs:
            a, b = runs["ours"].figures.get("goodput (events/s)"), runs["pool"].figures.get("goodput (events/s)")
            ratio = a / b if a is not None and b else None
            shown = "n/a" if ratio is None else f"{ratio:.2f} ({a:,.0f} vs {b:,.0f} ev/s)"
            rows.append((f"ours ÷ pool goodput >= {S2_MIN_OURS_OVER_POOL:g} at batch {runs['ours'].batch_size}",
                         f"{shown}; not valid: a drain ran out of backlog" if dry else shown, f"S2-{variant}",
                         None if ratio is None or dry else ratio >= S2_MIN_OURS_OVER_POOL))
    return rows


def targets(scenario: dict[str, Any], figs: list[RunFigures], calibration: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured for ours, scope, met?) rows."""
    rows: list[tuple[str, str, str, bool | None]] = []
    ours = [f for f in figs if f.client == "ours" and f.steady is not None]

    def fmt(v: float | None, spec: str = ".3f") -> str:
        return "n/a" if v is None else format(v, spec)

    def check(name: str, value: float | None, ok, shown: str, scope: str) -> None:
        rows.append((name, shown if value is not None else "n/a", scope, None if value is None else bool(ok(value))))

    name = scenario["name"]
    for f in ours:
        fg = f.figures
        scope = f.key
        if name == "S1":
            check("steady goodput >= 97 % of capacity", fg["goodput / capacity"], lambda v: v >= S1_GOODPUT_SHARE,
                  f"{fmt(fg['goodput / capacity'], '.1%')} ({fmt(fg['goodput (events/s)'], '.0f')} ev/s)", scope)
            check("429s <= 1 % of attempts", fg["429 share of attempts"], lambda v: v <= S1_MAX_429_SHARE,
                  fmt(fg["429 share of attempts"], ".2%"), scope)
            check("retry amplification <= 1.02", fg["retry amplification"], lambda v: v <= S1_MAX_AMPLIFICATION,
                  fmt(fg["retry amplification"]), scope)
            ref = calibration.get("client_p99_ms")
            p99 = fg["p99 request latency (ms)"]
            check("p99 <= 2x no-load p99", p99 if ref else None, lambda v, ref=ref: v <= S1_MAX_P99_FACTOR * ref,
                  f"{fmt(p99, '.1f')} ms vs no-load {fmt(ref, '.1f')} ms ({fmt(p99 / ref if p99 and ref else None, '.2f')}x)",
                  scope)
        if name == "S3":
            for label, key, ok in (
                    ("excess 429s stop <= 5 s after the capacity drop", "capacity: excess 429s stop after drop (s)",
                     lambda v: v <= S3_SETTLE_429_S),
                    (">= 90 % of capacity <= 5 s after restore (capacity x0.5)",
                     "capacity: >=90% of capacity after restore (s)", lambda v: v <= S3_RESTORE_S),
                    (">= 90 % of capacity <= 5 s after restore (503 outage)",
                     "outage: >=90% of capacity after restore (s)", lambda v: v <= S3_RESTORE_S),
                    ("amplification <= 1.10 through the 503 outage", "outage: amplification fault start..next phase",
                     lambda v: v <= S3_MAX_OUTAGE_AMPLIFICATION),
                    (">= 90 % of capacity <= 5 s after restore (refused connections)",
                     "refused: >=90% of capacity after restore (s)", lambda v: v <= S3_RESTORE_S),
                    ("amplification <= 1.10 through the refused connections",
                     "refused: amplification fault start..next phase", lambda v: v <= S3_MAX_OUTAGE_AMPLIFICATION),
                    (">= 85 % of capacity during latency x10", "latency: goodput during fault / capacity",
                     lambda v: v >= S3_LATENCY_GOODPUT),
                    ("503s <= 2 % of attempts during latency x10", "latency: 503 share during fault",
                     lambda v: v <= S3_LATENCY_MAX_503)):
                if key in fg:
                    v = fg[key]
                    rows.append((label, "never" if v is None else fmt(v, ".2f"), scope,
                                 False if v is None else bool(ok(v))))
            peak = fg.get("service peak concurrency")
            check(f"service peak concurrency <= --max_in_flight ({OURS_MAX_IN_FLIGHT})", peak,
                  lambda v: v <= OURS_MAX_IN_FLIGHT, fmt(peak, ".0f"), scope)
        if name == "S3o":
            v = fg.get("capacity: goodput during fault / capacity")
            check(">= 95 % of the reduced capacity during the trigger", v, lambda x: x >= S3_OVERLOAD_SHARE,
                  fmt(v, ".1%"), scope)
            run_faults = scenario["runs"][0]["run"]["faults"]
            limit = 2 * run_faults[0]["duration_s"]
            v = fg.get("capacity: >=95% of capacity after restore (s)")
            rows.append((f">= 95 % of capacity <= 2x fault duration ({limit:g} s) after the trigger ends",
                         "never" if v is None else f"{v:.1f} s", scope, v is not None and v <= limit))
        if name == "S4":
            check("total goodput >= 95 % of capacity", fg["goodput / capacity"], lambda v: v >= S4_GOODPUT_SHARE,
                  fmt(fg["goodput / capacity"], ".1%"), scope)
            check("429s <= 2 % of attempts", fg["429 share of attempts"], lambda v: v <= S4_MAX_429_SHARE,
                  fmt(fg["429 share of attempts"], ".2%"), scope)
            j = fg.get("Jain fairness of the workers' goodput")
            check("Jain fairness >= 0.95 after the warm-up", j, lambda v: v >= S4_FAIRNESS,
                  f"{fmt(j)} over {fmt(fg.get('workers that scored'), '.0f')} workers", scope)
            peak = fg.get("service peak concurrency")
            check(f"job-wide peak concurrency <= the job's cap ({S4_MAX_IN_FLIGHT})", peak,
                  lambda v: v <= S4_MAX_IN_FLIGHT, fmt(peak, ".0f"), scope)
    if name == "S2":
        rows += _s2_targets(figs)
    if name == "M" and len(ours) >= 2:
        small, big = sorted(ours, key=lambda f: int(f.variant.replace("lag", "").replace("k", "")))[:: len(ours) - 1]
        a, b = small.figures["peak RSS (MB)"], big.figures["peak RSS (MB)"]
        if a and b:
            rows.append((f"peak RSS with {big.variant[3:]} lag <= +10 % of {small.variant[3:]}",
                         f"{b:.0f} MB vs {a:.0f} MB ({b / a - 1:+.1%})", "ours", b <= MEMORY_MAX_GROWTH * a))
    return rows
