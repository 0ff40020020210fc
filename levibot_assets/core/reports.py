"""Views across days: what is in service for each symbol, and its live score beside the candidates.

A person judges the pipeline over weeks, not partitions. best_release attaches both views to each
partition it materializes (the chart of its symbol, the table of all symbols); `levibot releases`
prints the table. Everything is read from the data directory: releases/history.jsonl and
current/<SYMBOL> (core.release.deploy) and the stored predictions (core.predictions).
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from levibot_assets.core.layout import DataLayout
from levibot_assets.core.predictions import LIVE, LIVE_WINDOW_DAYS, POOLED, daily_auc_table
from levibot_assets.core.release.deploy import current_release_date, in_service_id, read_history
from levibot_assets.core.release.store import ReleaseError, read_manifest

DPI = 90


@dataclass(frozen=True)
class InService:
    """What serves one symbol now; None where it is unknown (nothing in service, no history)."""

    symbol: str
    release: str | None  # release date (releases/<date>/<SYMBOL>)
    model_type: str | None
    since: str | None  # UTC time of the history event that put this release in service
    live_auc: float | None  # pooled over the last LIVE_WINDOW_DAYS stored days
    live_days: int  # days counted in live_auc


def in_service(layout: DataLayout, symbol: str, until: str | None = None, table: pd.DataFrame | None = None) -> InService:
    """The row of the in-service table for `symbol` (`table`: its daily_auc_table, when already read)."""
    release = current_release_date(layout, symbol)
    model_type = None
    if release is not None:
        try:
            model_type = read_manifest(layout.release_dir(release, symbol)).get("model_type")
        except ReleaseError:
            model_type = "damaged"
    serving = in_service_id(layout, symbol)
    since = next((e.get("at") for e in reversed(read_history(layout, symbol)) if e.get("release_id") == serving), None)
    table = daily_auc_table(layout, symbol, until) if table is None else table
    live = table[LIVE] if LIVE in table else pd.Series(dtype="float64")
    pooled = live.get(POOLED)
    return InService(
        symbol=symbol,
        release=release,
        model_type=model_type,
        since=since,
        live_auc=None if pooled is None or np.isnan(pooled) else float(pooled),
        live_days=int(live.drop(POOLED, errors="ignore").notna().sum()),
    )


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def in_service_markdown(rows: list[InService]) -> str:
    """One line per symbol: release, family, in service since, live AUC pooled over 30 stored days."""
    lines = [
        f"| symbol | release | model | in service since (UTC) | live AUC, {LIVE_WINDOW_DAYS} days pooled | days |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in rows:
        since = r.since[:16].replace("T", " ") if r.since else None
        lines.append(f"| {r.symbol} | {_cell(r.release)} | {_cell(r.model_type)} | {_cell(since)} | "
                     f"{_cell(r.live_auc)} | {r.live_days} |")
    return "\n".join(lines)


def daily_auc_png(table: pd.DataFrame, symbol: str) -> bytes:
    """The daily AUC of `table` (core.predictions.daily_auc_table): live score bold, candidates
    solid, baselines dashed, 0.5 dotted; each label carries its pooled AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baselines = set(table.attrs.get("baselines", ()))
    days = table.drop(POOLED, errors="ignore")
    pooled = table.loc[POOLED] if POOLED in table.index else pd.Series(dtype="float64")
    x = pd.to_datetime(days.index)
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=DPI)
    for name in days.columns:
        label = f"{name} (pooled {pooled.get(name, np.nan):.3f})"
        if name == LIVE:
            ax.plot(x, days[name], color="black", lw=2.5, marker="o", ms=4, label=f"{label}: model in service")
        else:
            ax.plot(x, days[name], ls="--" if name in baselines else "-", lw=1.2, marker=".", label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_title(f"{symbol}: daily AUC, last {len(days)} stored days")
    ax.set_ylabel("AUC")
    ax.legend(fontsize=7, ncol=2)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def release_views(
    layout: DataLayout, symbols: list[str], date: str, symbol: str, table: pd.DataFrame | None = None
) -> dict[str, str]:
    """Markdown for best_release's (date, symbol) partition: "live_chart", the daily AUC chart of
    `symbol` over the stored days up to `date` (PNG inlined), and "in_service", the table of
    `symbols` as they stand when the partition is written (live AUC up to `date` too). `table`:
    the symbol's daily_auc_table up to `date`, when the caller has read it already."""
    table = daily_auc_table(layout, symbol, until=date) if table is None else table
    rows = [in_service(layout, s, until=date, table=table if s == symbol else None) for s in symbols]
    views = {"in_service": in_service_markdown(rows)}
    if not table.empty:
        png = base64.b64encode(daily_auc_png(table, symbol)).decode()
        views["live_chart"] = f"![{symbol} daily AUC](data:image/png;base64,{png})"
    return views
