"""The Markdown report: every figure as ours ÷ each baseline from the same run, plus the targets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed.bench.analysis import RunFigures, run_figures, targets

# Figures where a smaller value is the better one (for the "better" column).
LOWER_IS_BETTER = ("attempts/s", "429s/s", "429 share", "amplification", "latency", "RSS", "backlog growth",
                   "lag at end", "age at end", "failed drains", "startup", "(s)")


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "–"
    if b == 0:
        return "–" if a == 0 else "∞"
    return f"{a / b:.2f}"


def _better(name: str) -> str:
    if "in-flight" in name:
        return "–"
    return "lower" if any(k in name for k in LOWER_IS_BETTER) and "goodput" not in name else "higher"


def ratio_table(figs: list[RunFigures]) -> list[str]:
    """A row per figure: ours, then each baseline and ours ÷ that baseline."""
    ours = next((f for f in figs if f.client == "ours"), None)
    baselines = [f for f in figs if f is not ours]
    head = ["figure", "better"] + (["ours"] if ours else [])
    for b in baselines:
        head += [b.client] + ([f"ours ÷ {b.client}"] if ours else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = next((list(f.figures) for f in figs if f.figures), [])
    for name in names:
        row = [name, _better(name)] + ([_fmt(ours.figures.get(name))] if ours else [])
        for b in baselines:
            row.append(_fmt(b.figures.get(name)))
            if ours:
                row.append(_ratio(ours.figures.get(name), b.figures.get(name)))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def scenario_section(scenario: dict[str, Any], calibration: dict[str, Any], out_dir: Path) -> list[str]:
    figs = [run_figures(r) for r in scenario["runs"]]
    lines = [f"## {scenario['title']}", ""]
    if scenario.get("notes"):
        lines += [scenario["notes"], ""]
    for r in scenario["runs"]:
        run = r["run"]
        faults = ", ".join(f"{f['kind']} x{f.get('factor') or ''} at {f['at_s']:g}-{f['at_s'] + f['duration_s']:g} s"
                           for f in run["faults"]) or "none"
        lines.append(f"- `{run['scenario']}{'-' + run['variant'] if run['variant'] else ''}-{run['client']}`: "
                     f"window {run['duration_s']:g} s (steady state after {run['warmup_s']:g} s), batch "
                     f"{run['batch_size']}, prefill {run['prefill']:,}, intake {run['intake_eps']:.0f}/s, "
                     f"faults: {faults}, startup {r.get('startup_s', '–')} s"
                     + (f" — **error: {r['error']}**" if r.get("error") else ""))
    lines.append("")
    groups: dict[str, list[RunFigures]] = {}
    for f in figs:
        groups.setdefault(f.variant, []).append(f)
    for variant, group in groups.items():
        if len(groups) > 1 or variant:
            lines += [f"### {scenario['name']} {variant}", ""]
        lines += ratio_table(group) + [""]
    rows = targets(scenario, figs, calibration)
    if rows:
        lines += ["Targets (ours):", "", "| target | measured | run | met |", "|---|---|---|---|"]
        for name, measured, scope, ok in rows:
            lines.append(f"| {name} | {measured} | {scope} | {'n/a' if ok is None else ('yes' if ok else '**NO**')} |")
        lines.append("")
    png = f"{scenario['name']}.png"
    if (out_dir / png).exists():
        lines += [f"![{scenario['name']}]({png})", ""]
    return lines


def write_report(results: dict[str, Any], out_dir: Path) -> str:
    from testbed.bench.plots import plot_scenario
    cal = results.get("calibration") or {}
    lines = [f"# Benchmark {'(quick)' if results.get('quick') else '(full)'} — {results.get('started')}", "",
             f"Machine: {results.get('machine', {}).get('cpus')} CPUs; total wall time "
             f"{results.get('wall_s', 0):.0f} s. No-load latency (150 sequential single requests to an idle "
             f"service): client p50 {_fmt(cal.get('client_p50_ms'))} ms, p99 {_fmt(cal.get('client_p99_ms'))} ms; "
             f"service p99 {_fmt(cal.get('service_p99_ms'))} ms.", "",
             "Ratios are ours ÷ baseline from the same run; `better` says which direction favours a client. "
             "Definitions: see `testbed/bench/metrics.py` and README, \"Benchmark\".", ""]
    for scenario in results.get("scenarios", []):
        try:
            plot_scenario(scenario, out_dir)
        except Exception as exc:  # noqa: BLE001 - a failed plot must not lose the table
            lines.append(f"(plot failed: {exc})")
        lines += scenario_section(scenario, cal, out_dir)
    text = "\n".join(lines)
    (out_dir / "report.md").write_text(text)
    return text
