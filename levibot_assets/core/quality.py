"""Data and model quality rules, framework-free: each rule returns a `QualityResult`.

The Dagster layer (levibot_assets/checks.py) turns results into asset check results; which rule
blocks the graph is decided there. Rules never raise on bad data: bad data is what they report.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from levibot_assets.core.features import (
    FEATURE_COLUMNS,
    LABEL_AVAILABLE_COLUMN,
    LABEL_COLUMN,
    MAX_LOOKBACK,
)
from levibot_assets.core.ohlcv import (
    BARS_PER_DAY,
    HALT_MIN_MINUTES,
    MINUTE,
    OHLCV_COLUMNS,
    PRICE_COLUMNS,
    find_gaps,
    utc_timestamps,
    zero_volume_streaks,
)
from levibot_assets.core.metrics import higher_is_better
from levibot_assets.core.integrity import MISMATCH, MISSING
from levibot_assets.core.release.store import check_files

LABEL_SHARE_BOUNDS = (0.30, 0.70)  # share of "up" labels outside this suggests a broken label
# A spike: a bar's high or low this many times away from the median close of the bars on both sides.
# The largest such move of an ordinary bar in the shared real data (BTC, ETH, SOL, 2023-03-16..05-01)
# is 1.041 (SOL 2023-04-19 08:22; BTC 1.013, ETH 1.015); 1.5 is ten times that in log terms.
SPIKE_MAX_RATIO = 1.5
SPIKE_NEIGHBOURS = 5  # bars on each side: their median ignores up to 2 spiked bars among them
_MAX_LISTED = 20  # examples listed in a description; counts are always complete


@dataclass(frozen=True)
class QualityResult:
    """Outcome of one rule: passed or not, a sentence for people, numbers for the UI."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _listed(items: list, unit: str = "") -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more{unit}" if len(items) > _MAX_LISTED else ""
    return shown + more


# --- raw candles -------------------------------------------------------------------------------


def raw_consistency(bars: pd.DataFrame) -> QualityResult:
    """Hard violations of the candle contract; training on such a day would learn garbage."""
    missing_cols = [c for c in OHLCV_COLUMNS if c not in bars.columns]
    if missing_cols:
        return QualityResult(False, f"missing columns: {', '.join(missing_cols)}", {"rows": len(bars)})
    ts = utc_timestamps(bars["timestamp"])
    prices = bars[PRICE_COLUMNS].to_numpy(dtype="float64")
    volume = bars["volume"].to_numpy(dtype="float64")
    o, h, l, c = (bars[col].to_numpy(dtype="float64") for col in PRICE_COLUMNS)
    counts = {
        "duplicate_timestamps": int(ts.duplicated().sum()),
        "unordered_timestamps": int((ts.diff() < pd.Timedelta(0)).sum()),
        "non_finite_values": int((~np.isfinite(prices)).sum() + (~np.isfinite(volume)).sum()),
        "non_positive_prices": int((prices <= 0).sum()),
        "negative_volume": int((volume < 0).sum()),
        "inconsistent_ohlc": int(((l > np.minimum(o, c)) | (h < np.maximum(o, c)) | (l > h)).sum()),
    }
    problems = [f"{n} {name.replace('_', ' ')}" for name, n in counts.items() if n]
    examples: list[str] = []
    if counts["duplicate_timestamps"]:
        examples.append("duplicated at " + _listed([f"{t:%H:%M}" for t in ts[ts.duplicated()].drop_duplicates()]))
    if counts["inconsistent_ohlc"]:
        bad = ts[(l > np.minimum(o, c)) | (h < np.maximum(o, c)) | (l > h)]
        examples.append("OHLC out of order at " + _listed([f"{t:%H:%M}" for t in bad]))
    description = (
        "bars are unique, ordered, finite, positive and low <= open, close <= high"
        if not problems
        else "; ".join(problems) + (" (" + "; ".join(examples) + ")" if examples else "")
    )
    return QualityResult(not problems, description, {"rows": len(bars), **counts})


def raw_completeness(bars: pd.DataFrame, date: dt.date) -> QualityResult:
    """A complete UTC day has 1440 bars; missing minutes are listed with their times."""
    gaps = find_gaps(bars, date)
    missing = sum(g.minutes for g in gaps)
    description = (
        f"all {BARS_PER_DAY} bars present"
        if not gaps
        else f"{missing} missing minutes in {len(gaps)} gaps: {_listed([str(g) for g in gaps], ' gaps')}"
    )
    return QualityResult(
        not gaps,
        description,
        {
            "bars": len(bars),
            "expected_bars": BARS_PER_DAY,
            "missing_minutes": missing,
            "gaps": len(gaps),
            "gap_times": [str(g) for g in gaps],
        },
    )


def spike_ratios(bars: pd.DataFrame, neighbours: int = SPIKE_NEIGHBOURS) -> np.ndarray:
    """Per bar (time order), how far its high or low is from the median close on BOTH sides, as a ratio >= 1.

    A price that jumps and comes back is far from both sides; a crash that stays down is close to
    the side it moved to. The first bar's earlier side is its own open; the last bar has one side only.
    """
    ordered = bars.sort_values("timestamp", kind="stable")
    closes = ordered["close"].astype("float64").reset_index(drop=True)
    before = closes.rolling(neighbours, min_periods=1).median().shift(1).to_numpy(copy=True)
    after = closes[::-1].rolling(neighbours, min_periods=1).median().shift(1)[::-1].to_numpy()
    if len(before):
        before[0] = float(ordered["open"].iloc[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        up = ordered["high"].to_numpy(dtype="float64") / np.fmax(before, after)
        down = np.fmin(before, after) / ordered["low"].to_numpy(dtype="float64")
    return np.nan_to_num(np.fmax(up, down), nan=1.0)


def raw_spikes(bars: pd.DataFrame, max_ratio: float = SPIKE_MAX_RATIO) -> QualityResult:
    """Bars whose price jumps more than `max_ratio` away from its neighbours and back: a bad tick, not a market."""
    ratios = spike_ratios(bars)
    spiked = np.flatnonzero(ratios > max_ratio)
    ts = utc_timestamps(bars["timestamp"]).sort_values(kind="stable") if spiked.size else None  # times of spikes only
    largest = float(ratios.max()) if len(ratios) else 1.0
    description = (
        f"no bar jumps more than {max_ratio}x from its neighbours and back (largest {largest:.3f}x)"
        if not spiked.size
        else f"{spiked.size} bars jump more than {max_ratio}x from their neighbours and back: "
        + _listed([f"{ts.iloc[i]:%H:%M} ({ratios[i]:.4g}x)" for i in spiked])
    )
    return QualityResult(
        not spiked.size,
        description,
        {"spiked_bars": int(spiked.size), "largest_spike_ratio": largest, "spike_bound": max_ratio,
         "spike_times": [f"{ts.iloc[i]:%H:%M}" for i in spiked[:_MAX_LISTED]]},
    )


def raw_halts(bars: pd.DataFrame, min_minutes: int = HALT_MIN_MINUTES) -> QualityResult:
    """Long runs of zero-volume bars: the exchange was halted or the feed froze."""
    ordered = bars.sort_values("timestamp", kind="stable")
    streaks = zero_volume_streaks(ordered, min_length=min_minutes)
    zero_bars = sum(s.minutes for s in streaks)
    description = (
        f"no run of {min_minutes}+ zero-volume bars"
        if not streaks
        else f"{zero_bars} zero-volume bars in {len(streaks)} streaks: {_listed([str(s) for s in streaks])}"
    )
    return QualityResult(
        not streaks,
        description,
        {
            "zero_volume_streaks": len(streaks),
            "zero_volume_bars_in_streaks": zero_bars,
            "streak_times": [str(s) for s in streaks],
        },
    )


# --- features ----------------------------------------------------------------------------------


def features_finite(frame: pd.DataFrame) -> QualityResult:
    """No +-inf anywhere and labels are 0, 1 or unknown: otherwise the computation is broken."""
    missing_cols = [c for c in [*FEATURE_COLUMNS, LABEL_COLUMN] if c not in frame.columns]
    if missing_cols:
        return QualityResult(False, f"missing columns: {', '.join(missing_cols)}", {"rows": len(frame)})
    values = frame[FEATURE_COLUMNS].to_numpy(dtype="float64")
    inf_by_column = {c: int(n) for c, n in zip(FEATURE_COLUMNS, np.isinf(values).sum(axis=0)) if n}
    label = frame[LABEL_COLUMN].to_numpy(dtype="float64")
    bad_labels = int((~np.isnan(label) & (label != 0) & (label != 1)).sum())
    problems = [f"{n} infinite values in {c}" for c, n in inf_by_column.items()]
    if bad_labels:
        problems.append(f"{bad_labels} labels other than 0/1/unknown")
    return QualityResult(
        not problems,
        "; ".join(problems) or "all feature values finite or missing, labels in {0, 1}",
        {"rows": len(frame), "infinite_values": sum(inf_by_column.values()), "invalid_labels": bad_labels},
    )


def features_complete_after_warmup(frame: pd.DataFrame) -> QualityResult:
    """Rows whose previous MAX_LOOKBACK minutes are all present must have every feature.

    The first MAX_LOOKBACK rows of the day and rows right after a gap are warm-up: NaN is expected
    there. A NaN elsewhere means a zero-volume stretch (volume_rel_30 is undefined) or a bug.
    """
    ts = utc_timestamps(frame["timestamp"]).reset_index(drop=True)
    stamps = ts.to_numpy(dtype="datetime64[ns]")  # UTC; a plain to_numpy() builds one Timestamp object per row
    warmed = np.zeros(len(frame), dtype=bool)
    if len(frame) > MAX_LOOKBACK:
        warmed[MAX_LOOKBACK:] = (stamps[MAX_LOOKBACK:] - stamps[:-MAX_LOOKBACK]) == np.timedelta64(MAX_LOOKBACK * 60, "s")
    nan = np.isnan(frame[FEATURE_COLUMNS].to_numpy(dtype="float64"))
    bad_rows = warmed & nan.any(axis=1)
    by_column = {c: int(n) for c, n in zip(FEATURE_COLUMNS, (nan & warmed[:, None]).sum(axis=0)) if n}
    description = (
        f"every feature present on all {int(warmed.sum())} warmed-up rows"
        if not bad_rows.any()
        else f"{int(bad_rows.sum())} warmed-up rows with missing features ("
        + ", ".join(f"{c}: {n}" for c, n in by_column.items())
        + "), first at "
        + f"{ts[bad_rows].iloc[0]:%H:%M}"
    )
    return QualityResult(
        not bad_rows.any(),
        description,
        {"warmed_up_rows": int(warmed.sum()), "rows_with_missing_features": int(bad_rows.sum()), **{f"missing_{c}": n for c, n in by_column.items()}},
    )


def label_balance(frame: pd.DataFrame, bounds: tuple[float, float] = LABEL_SHARE_BOUNDS) -> QualityResult:
    """Share of 'up' labels among known labels; far from 1/2 means a broken label or a dead market."""
    known = frame.loc[frame[LABEL_AVAILABLE_COLUMN].astype(bool), LABEL_COLUMN].to_numpy(dtype="float64")
    if known.size == 0:
        return QualityResult(False, "no row has a known label", {"labelled_rows": 0})
    share = float(known.mean())
    low, high = bounds
    passed = low <= share <= high
    return QualityResult(
        passed,
        f"up-label share {share:.3f} {'within' if passed else 'outside'} [{low}, {high}] on {known.size} rows",
        {"labelled_rows": int(known.size), "up_share": share, "bound_low": low, "bound_high": high},
    )


# --- models ------------------------------------------------------------------------------------

def beats_baselines(metric: str, score: float, baselines: Mapping[str, float]) -> QualityResult:
    """The out-of-sample score must beat the best baseline on the same rows (NaN baselines ignored)."""
    baselines = {name: float(value) for name, value in baselines.items() if np.isfinite(value)}
    if not baselines:
        return QualityResult(False, f"no finite baseline {metric} to compare with", {"oos_score": float(score)})
    lower = not higher_is_better(metric)
    best_name = (min if lower else max)(baselines, key=lambda k: baselines[k])
    best = float(baselines[best_name])
    score = float(score)
    passed = bool(np.isfinite(score)) and (score < best if lower else score > best)
    return QualityResult(
        passed,
        f"OOS {metric} {score:.4f} {'beats' if passed else 'does not beat'} best baseline {best_name} {best:.4f}",
        {"oos_score": score, "best_baseline_score": best, "margin": (best - score) if lower else (score - best), "best_baseline": best_name},
    )


def train_test_disjoint(
    train_end: pd.Timestamp | str, test_start: pd.Timestamp | str, min_gap: pd.Timedelta = pd.Timedelta(0)
) -> QualityResult:
    """The last training bar must precede the first test bar by at least `min_gap` (the purge)."""
    train_end, test_start = pd.Timestamp(train_end), pd.Timestamp(test_start)
    gap = test_start - train_end
    passed = gap > pd.Timedelta(0) and gap >= min_gap
    return QualityResult(
        passed,
        f"training ends {train_end}, test starts {test_start}: gap {gap} "
        + ("respects" if passed else "violates")
        + f" the required {min_gap}",
        {"gap_minutes": float(gap / MINUTE), "required_gap_minutes": float(min_gap / MINUTE)},
    )


# --- releases ----------------------------------------------------------------------------------


def release_files_intact(directory: Path, expected_sha256: Mapping[str, str]) -> QualityResult:
    """Every file the manifest lists exists and has the recorded sha256 (the loader's own check_files)."""
    if not expected_sha256:
        return QualityResult(False, f"manifest of {directory} lists no files", {"files": 0})
    _, found = check_files(directory, expected_sha256)
    missing = [name for name, problem in found.items() if problem == MISSING]
    mismatched = [name for name, problem in found.items() if problem == MISMATCH]
    problems = ([f"missing: {', '.join(missing)}"] if missing else []) + (
        [f"hash mismatch: {', '.join(mismatched)}"] if mismatched else []
    )
    return QualityResult(
        not problems,
        "; ".join(problems) or f"{len(expected_sha256)} files present with matching sha256",
        {"files": len(expected_sha256), "missing_files": len(missing), "hash_mismatches": len(mismatched)},
    )


def release_predicts(load: Callable[[], Any], frame: pd.DataFrame) -> QualityResult:
    """The released model loads and gives probabilities in [0, 1] for the sample rows."""
    try:
        proba = np.asarray(load().predict_proba(frame), dtype="float64")
    except Exception as exc:  # any failure here is the finding, reported with its type
        return QualityResult(False, f"release does not load or predict: {type(exc).__name__}: {exc}", {"predictions": 0})
    finite = proba[np.isfinite(proba)]
    problems = []
    if proba.shape != (len(frame),):
        problems.append(f"{proba.shape} predictions for {len(frame)} rows")
    if finite.size == 0:
        problems.append("no finite prediction")
    elif (finite < 0).any() or (finite > 1).any():
        problems.append("probabilities outside [0, 1]")
    return QualityResult(
        not problems,
        "; ".join(problems) or f"loads and predicts {finite.size} of {len(frame)} rows",
        {"predictions": int(finite.size), "rows": len(frame)},
    )
