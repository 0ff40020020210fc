"""Walk-forward splits with a purge gap, so no training label overlaps what it is scored on.

A row at time t has features looking back up to MAX_LOOKBACK bars and a label looking forward H
bars (t .. t+H). A training row is kept for a later block (validation fold or test day) starting at
S only if t < S - gap with gap = H + MAX_LOOKBACK minutes: its label ends before S by at least
MAX_LOOKBACK bars, so no training label overlaps the block and no bar shared by a training label
feeds the block's rolling features either. Splits are by time, not row count: missing minutes
do not shrink the gap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from levibot_assets.core.features import MAX_LOOKBACK
from levibot_assets.core.ohlcv import MINUTE, utc_timestamps


class SplitError(ValueError):
    """The rows cannot be split as asked (message says why)."""


@dataclass(frozen=True)
class Fold:
    """Positional indices of the rows to train on and to validate on."""

    train: np.ndarray
    valid: np.ndarray


def purge_gap(horizon: int) -> pd.Timedelta:
    """The minimum time between the last training row and the first scored row."""
    return (horizon + MAX_LOOKBACK) * MINUTE


def purged_before(timestamps: pd.Series, block_start: pd.Timestamp, horizon: int) -> np.ndarray:
    """Boolean mask of rows far enough before `block_start` to train a model scored on the block."""
    return (utc_timestamps(timestamps) < block_start - purge_gap(horizon)).to_numpy()


def walk_forward_splits(timestamps: pd.Series, horizon: int, n_folds: int = 3, min_train_rows: int = 200) -> list[Fold]:
    """Expanding-window folds over time-sorted rows: the last `n_folds` equal time blocks validate.

    Fold k trains on every row purged before block k (see module docstring) and validates on
    block k; a fold whose purged training part has fewer than `min_train_rows` rows is refused.
    """
    if n_folds < 1:
        raise SplitError(f"n_folds must be >= 1, got {n_folds}")
    ts = pd.Series(utc_timestamps(timestamps)).reset_index(drop=True)
    if ts.empty:
        raise SplitError("no rows to split")
    if not ts.is_monotonic_increasing or ts.duplicated().any():
        raise SplitError("timestamps must be strictly increasing (sort the rows by time first)")
    first, last = ts.iloc[0], ts.iloc[-1] + MINUTE
    # The validation blocks cover the last half of the period, so the first fold trains on half.
    valid_start = first + (last - first) / 2
    block = (last - valid_start) / n_folds
    folds = []
    for k in range(n_folds):
        start, end = valid_start + k * block, valid_start + (k + 1) * block
        valid = np.flatnonzero(((ts >= start) & (ts < end)).to_numpy())
        train = np.flatnonzero(purged_before(ts, start, horizon))
        if len(train) < min_train_rows:
            raise SplitError(
                f"fold {k + 1}/{n_folds} would train on {len(train)} rows (< {min_train_rows}): "
                "the training period is too short for the label horizon and purge gap"
            )
        if len(valid) == 0:
            raise SplitError(f"fold {k + 1}/{n_folds} has no rows in {start} .. {end} (a gap in the data)")
        folds.append(Fold(train=train, valid=valid))
    return folds
