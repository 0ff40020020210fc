"""Test-day predictions as data, and the live score computed from them.

best_release stores, for each (date, symbol), one plain parquet file (DataLayout.predictions):

    predictions/<date>/<SYMBOL>.parquet
        timestamp  datetime64[ns, UTC]   the test-day row (bar open time)
        model      str                   candidate family (lgbm, tft, logistic, ...), baseline name, or "champion"
        role       str                   "candidate", "baseline" or "champion"
        p_up       float64               P(label = 1); NaN where the model had no probability for the row
        label      float64               the realised label of the row (the same for every model)
        scored     bool                  the row is one of those every score of the decision comes from
        release    str | null            champion rows: the date of the release in service; else null

Every score of the release decision is `core.metrics.classification_scores(label, p_up)` over the
rows of one model with `scored` true, so any of them can be recomputed from the file alone (pandas,
pyarrow, DuckDB, polars: it is a plain parquet file).

The live score of a symbol is what a trader lived with: for each day D, the AUC of the model that
was in service at the start of D, released on an earlier day (the "champion" rows of D, whose
`release` date is before D), over every row it gave a probability for. A day with no such rows (no
release yet, the champion could not be scored, or a re-run of D scored against D's own release)
is missing: it is left out, never counted as 0.5. Pooled over days = one AUC over all such rows.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from levibot_assets.core.evaluation import Evaluation
from levibot_assets.core.layout import DataLayout, date_str, partition_label
from levibot_assets.core.metrics import roc_auc
from levibot_assets.core.tables import atomic_write_parquet, read_parquet_file

CHAMPION = "champion"
COLUMNS = ("timestamp", "model", "role", "p_up", "label", "scored", "release")
LIVE_WINDOW_DAYS = 30


def predictions_frame(evaluation: Evaluation, champion_release: str | None = None) -> pd.DataFrame:
    """The long table of COLUMNS from an evaluation's per-row predictions (models, then baselines)."""
    wide = evaluation.predictions
    if wide is None:
        raise ValueError("the evaluation carries no per-row predictions")
    parts = []
    for name in evaluation.models + evaluation.baselines:
        role = "baseline" if name in evaluation.baselines else (CHAMPION if name == CHAMPION else "candidate")
        parts.append(pd.DataFrame({
            "timestamp": wide["timestamp"],
            "model": name,
            "role": role,
            "p_up": wide[name].to_numpy(dtype="float64"),
            "label": wide["label"].to_numpy(dtype="float64"),
            "scored": wide["scored"].to_numpy(dtype=bool),
            "release": champion_release if name == CHAMPION else None,
        }))
    frame = pd.concat(parts, ignore_index=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    for column in ("model", "role", "release"):
        frame[column] = frame[column].astype(object)
    return frame[list(COLUMNS)]


def write_predictions(layout: DataLayout, date: dt.date | str, symbol: str, frame: pd.DataFrame) -> Path:
    """Atomically replace predictions/<date>/<SYMBOL>.parquet, its sha256 beside it (core.tables)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions for {partition_label(date, symbol)} lack columns {missing}")
    return atomic_write_parquet(layout.predictions(date, symbol), frame[list(COLUMNS)])


def read_predictions(layout: DataLayout, date: dt.date | str, symbol: str) -> pd.DataFrame:
    return read_parquet_file(layout.predictions(date, symbol), producer="best_release")


def prediction_dates(layout: DataLayout, symbol: str) -> list[str]:
    """Dates with stored predictions for the symbol, oldest first."""
    return layout.table_dates("predictions", symbol)


def recent_predictions(layout: DataLayout, symbol: str, before: dt.date | str, days: int) -> dict[str, pd.DataFrame]:
    """{day: predictions} of the last `days` stored days of `symbol` strictly before `before`."""
    if days < 1:
        return {}
    dates = [d for d in prediction_dates(layout, symbol) if d < date_str(before)][-days:]
    return {day: read_predictions(layout, day, symbol) for day in dates}


def live_rows(frame: pd.DataFrame, date: dt.date | str) -> pd.DataFrame:
    """Champion rows of one day's predictions released before the day and with a probability."""
    rows = frame.loc[(frame["model"] == CHAMPION) & frame["release"].notna()]
    rows = rows.loc[(rows["release"].astype(str) < date_str(date)) & np.isfinite(rows["p_up"].to_numpy(dtype="float64"))]
    return rows


def _auc(rows: pd.DataFrame) -> float | None:
    y = rows["label"].to_numpy(dtype="float64")
    if len(rows) == 0 or len(np.unique(y)) < 2:
        return None
    return roc_auc(y, rows["p_up"].to_numpy(dtype="float64"))


@dataclass
class LiveScore:
    """The live score of one symbol over the stored days up to `until` (window of `window` stored days)."""

    symbol: str
    until: str | None
    window: int
    days: list[str] = field(default_factory=list)  # stored days looked at, oldest first
    by_day: dict[str, float | None] = field(default_factory=dict)  # None: missing (no model in service)
    pooled_auc: float | None = None
    rows: int = 0

    @property
    def days_counted(self) -> int:
        return sum(v is not None for v in self.by_day.values())

    @property
    def days_missing(self) -> int:
        return len(self.days) - self.days_counted

    @property
    def day_auc(self) -> float | None:
        """The live AUC of the last day looked at (`until`)."""
        return self.by_day.get(self.until) if self.until else None


def live_score(
    layout: DataLayout, symbol: str, until: dt.date | str | None = None, window: int = LIVE_WINDOW_DAYS
) -> LiveScore:
    """Pooled live AUC over the last `window` stored prediction days of `symbol` up to `until` (default: all)."""
    dates = prediction_dates(layout, symbol)
    if until is not None:
        dates = [d for d in dates if d <= date_str(until)]
    dates = dates[-window:]
    result = LiveScore(symbol=symbol, until=dates[-1] if dates else None, window=window, days=dates)
    pooled = []
    for day in dates:
        rows = live_rows(read_predictions(layout, day, symbol), day)
        result.by_day[day] = _auc(rows)
        if result.by_day[day] is not None:
            pooled.append(rows)
    if pooled:
        rows = pd.concat(pooled, ignore_index=True)
        result.pooled_auc, result.rows = _auc(rows), len(rows)
    return result


POOLED = "pooled"
LIVE = "live"


def daily_auc_table(
    layout: DataLayout, symbol: str, until: dt.date | str | None = None, window: int = LIVE_WINDOW_DAYS
) -> pd.DataFrame:
    """Date x model -> AUC over the last `window` stored days up to `until`, and a last row POOLED.

    Column LIVE is the live score (`live_rows`: the model in service at the start of the day); the
    others are each candidate and baseline over its `scored` rows, the rows of the day's decision.
    NaN: no score that day (nothing in service, or one class only). POOLED: one AUC over all the
    rows of the column's days; its LIVE cell equals `live_score(...).pooled_auc`. The baselines'
    names are in `table.attrs["baselines"]`.
    """
    dates = prediction_dates(layout, symbol)
    if until is not None:
        dates = [d for d in dates if d <= date_str(until)]
    by_day: dict[str, dict[str, float | None]] = {}
    pooled: dict[str, list[pd.DataFrame]] = {}
    baselines: set[str] = set()
    for day in dates[-window:]:
        frame = read_predictions(layout, day, symbol)
        parts = {LIVE: live_rows(frame, day)}
        scored = frame.loc[frame["scored"].astype(bool) & frame["role"].isin(["candidate", "baseline"])]
        parts.update({str(name): rows for name, rows in scored.groupby("model", sort=False)})
        baselines.update(scored.loc[scored["role"] == "baseline", "model"].astype(str))
        by_day[day] = {name: _auc(rows) for name, rows in parts.items()}
        for name, rows in parts.items():
            if by_day[day][name] is not None:
                pooled.setdefault(name, []).append(rows)
    table = pd.DataFrame.from_dict(by_day, orient="index", dtype="float64")
    if table.empty:
        return table
    if LIVE not in table:
        table.insert(0, LIVE, np.nan)
    table.loc[POOLED] = {name: _auc(pd.concat(parts, ignore_index=True)) for name, parts in pooled.items()}
    table = table.astype("float64")
    table.attrs["baselines"] = sorted(baselines)
    return table
