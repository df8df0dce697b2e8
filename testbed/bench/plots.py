"""One PNG per scenario: a column per client run, rows goodput vs capacity, 429s, lag, RSS.

Readable without the table: every panel is titled with the client, fault
windows are shaded and labelled, axes of a row are shared across clients.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from testbed.bench import metrics as m  # noqa: E402

FAULT_COLOURS = {"capacity": "#f4a261", "outage": "#e76f51", "latency": "#8ecae6"}


def _shade(ax, faults: list[dict[str, Any]], label: bool) -> None:
    for f in faults:
        ax.axvspan(f["at_s"], f["at_s"] + f["duration_s"], color=FAULT_COLOURS.get(f["kind"], "grey"), alpha=0.25,
                   label=(f"{f['kind']}" + (f" x{f['factor']:g}" if f.get("factor") else "")) if label else None)


def _xy(series: m.Series):
    return [t for t, _ in series], [v for _, v in series]


def plot_scenario(scenario: dict[str, Any], out_dir: Path) -> Path:
    runs = [r for r in scenario["runs"] if r.get("samples")]
    cols = max(1, len(runs))
    fig, axes = plt.subplots(4, cols, figsize=(4.2 * cols + 1, 11), sharex="col", sharey="row", squeeze=False)
    for c, record in enumerate(runs):
        run, samples = record["run"], record["samples"]
        b = run["batch_size"]
        title = run["client"] + (f" ({run['variant']})" if run["variant"] else "")
        faults = run.get("faults") or []
        ax = axes[0][c]
        ax.plot(*_xy(m.capacity_series(samples, b)), "k--", lw=1.2, label="capacity (events/s)")
        ax.plot(*_xy(m.rolling(m.goodput_series(samples), 3)), color="#2a9d8f", lw=1.6, label="goodput (3 s mean)")
        ax.plot(*_xy(m.attempts_series(samples)), color="#999999", lw=0.8, alpha=0.8,
                label="attempts/s (requests)")
        if run["intake_eps"]:
            ax.axhline(run["intake_eps"], color="#6a4c93", lw=0.8, ls=":", label="intake (events/s)")
        ax.set_title(f"{title}\nbatch {b}", fontsize=10)
        ax.set_yscale("symlog", linthresh=100)
        ax = axes[1][c]
        ax.plot(*_xy(m.r429_series(samples)), color="#e63946", lw=1.2, label="429s/s")
        ax.plot(*_xy(m.r5xx_series(samples)), color="#f4a261", lw=1.0, label="503s/s (outage, concurrency)")
        ax.set_yscale("symlog", linthresh=10)
        ax = axes[2][c]
        ax.plot(*_xy(m.lag_series(samples)), color="#264653", lw=1.4, label="Kafka lag (end - committed)")
        ax.plot(*_xy(m.unread_series(samples)), color="#2a9d8f", lw=1.0, ls="--", label="unread (end - read)")
        ax = axes[3][c]
        ax.plot(*_xy(m.rss_series_mb(samples)), color="#6d597a", lw=1.4, label="client process RSS (MB)")
        ax.set_xlabel("seconds since the first request")
        if record.get("error"):
            axes[0][c].text(0.02, 0.02, f"error: {record['error'][:60]}", transform=axes[0][c].transAxes,
                            fontsize=7, color="red")
        for r in range(4):
            _shade(axes[r][c], faults, label=(r == 0))
            axes[r][c].grid(alpha=0.3)
    for r, ylabel in enumerate(("events/s", "responses/s", "events", "MB")):
        axes[r][0].set_ylabel(ylabel)
        axes[r][0].legend(fontsize=7, loc="upper left")
    axes[3][0].set_ylim(bottom=0)
    axes[2][0].set_ylim(bottom=0)
    peak_errors = max((max(line.get_ydata(), default=0) for ax in axes[1] for line in ax.get_lines()), default=0)
    axes[1][0].set_ylim(0, max(10.0, float(peak_errors) * 1.5))
    fig.suptitle(scenario["title"], fontsize=12)
    fig.tight_layout()
    path = out_dir / f"{scenario['name']}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
