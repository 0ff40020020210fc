"""Turn a trailing window of daily feature frames into purged training rows and test-day rows.

The window is {'YYYY-MM-DD': features frame} (missing days omitted) ending at the test date. The
test date's rows are scored; every earlier day trains, minus the rows purged before the test day
(core.splits.purge_gap). Bad windows are refused with an error naming the problem.
"""
from __future__ import annotations

import datetime as dt
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from levibot_assets.core.features import LABEL_AVAILABLE_COLUMN, LABEL_COLUMN, check_contract, training_rows
from levibot_assets.core.layout import DataLayout
from levibot_assets.core import object_store
from levibot_assets.core.tables import read_parquet_file, read_window, trailing_dates
from levibot_assets.core.ohlcv import day_start
from levibot_assets.core.splits import purged_before

MIN_TRAIN_ROWS = 1000
MIN_TEST_ROWS = 100


class DatasetError(ValueError):
    """The feature window cannot give an honest train/test split (message says why)."""


@dataclass(frozen=True)
class TrainTest:
    """Rows to train on, rows to score, and the unfiltered frames they come from.

    `history` is every row of the training days up to the purge cut (rows without a known label
    included) and `context` every row of the last training day (the day before the test day unless
    it is missing) and of the test day, for models that read history (TFT); align predictions on
    `context` to `test` by timestamp, and to `train` for the calibration rows of the trading rule.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    history: pd.DataFrame
    context: pd.DataFrame
    test_date: dt.date


def _check_labels(frame: pd.DataFrame, day: str) -> None:
    available = frame[LABEL_AVAILABLE_COLUMN].to_numpy().astype(bool)
    known = frame[LABEL_COLUMN].to_numpy(dtype="float64", na_value=np.nan)[available]  # numpy: 14 days per window
    missing = np.isnan(known)
    if missing.any():
        raise DatasetError(f"features of {day}: {int(missing.sum())} rows marked label_available have a NaN label")
    if not ((known == 0.0) | (known == 1.0)).all():
        raise DatasetError(f"features of {day}: labels must be 0 or 1")


def _classes(rows: pd.DataFrame, what: str) -> None:
    present = set(np.unique(rows[LABEL_COLUMN].to_numpy()))
    if len(present) < 2:
        raise DatasetError(f"{what} rows hold a single class ({sorted(present)}): a classifier cannot be trained or scored")


class DayCache:
    """Parsed feature days shared by the windows of one run: the windows of consecutive test days
    share all days but one, so a range reads each file once instead of once per window.

    Holds at most `capacity` frames, the least recently used dropped first. A local file is re-read
    when its size, mtime or inode changed (rewritten meanwhile); object-store files are read every
    time. The frames are shared between windows: callers must not modify them.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a day cache needs a capacity of at least 1 frame, got {capacity}")
        self.capacity = capacity
        self._frames: OrderedDict[str, tuple[tuple[int, int, int], pd.DataFrame]] = OrderedDict()

    def read(self, path: Path) -> pd.DataFrame:
        if object_store.is_remote(path):
            return read_parquet_file(path)
        stat = os.stat(path)  # before the read: a file replaced in between is read again next time
        identity = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        key = str(path)
        cached = self._frames.get(key)
        if cached is not None and cached[0] == identity:
            self._frames.move_to_end(key)
            return cached[1]
        frame = read_parquet_file(path)
        self._frames[key] = (identity, frame)
        self._frames.move_to_end(key)
        while len(self._frames) > self.capacity:
            self._frames.popitem(last=False)
        return frame


def load_feature_window(
    layout: DataLayout, symbol: str, test_date: dt.date, days: int, horizon: int, cache: DayCache | None = None
) -> dict[str, pd.DataFrame]:
    """The stored features of `test_date` and the `days - 1` days before it, each checked to be made
    under the contract the reader expects (feature set and label horizon); read through `cache` when given."""
    read = cache.read if cache is not None else read_parquet_file
    window = read_window(layout, "features", symbol, trailing_dates(test_date, days), read)
    for day, frame in window.items():
        check_contract(frame, horizon, f"features {day}|{symbol} ({layout.table('features', day, symbol)})")
    return window


def split_window(
    window: Mapping[str, pd.DataFrame],
    test_date: dt.date,
    horizon: int,
    min_train_rows: int = MIN_TRAIN_ROWS,
    min_test_rows: int = MIN_TEST_ROWS,
) -> TrainTest:
    """Training rows from the days before `test_date` (purged), test rows from `test_date`."""
    key = test_date.isoformat()
    if key not in window:
        raise DatasetError(f"the test day {key} is missing from the feature window (days present: {sorted(window)})")
    later = [d for d in window if d > key]
    if later:
        raise DatasetError(f"the feature window holds days after the test day {key}: {later}")
    for day, frame in window.items():
        _check_labels(frame, day)
    train_days = [window[d] for d in sorted(window) if d < key and len(window[d])]
    if not train_days:
        raise DatasetError(f"no training days before {key} in the feature window")
    history = pd.concat(train_days, ignore_index=True).sort_values("timestamp", ignore_index=True)
    history = history.loc[purged_before(history["timestamp"], day_start(test_date), horizon)].reset_index(drop=True)
    train = training_rows(history)
    test = training_rows(window[key])
    if len(train) < min_train_rows:
        raise DatasetError(f"too few training rows before {key}: {len(train)} < {min_train_rows}")
    if len(test) < min_test_rows:
        raise DatasetError(f"too few test rows on {key}: {len(test)} < {min_test_rows}")
    _classes(train, "training")
    _classes(test, f"test-day ({key})")
    previous = max(d for d in window if d < key and len(window[d]))  # the day before, unless it is missing
    context = pd.concat([window[previous], window[key]], ignore_index=True)
    context = context.sort_values("timestamp", ignore_index=True)
    return TrainTest(train=train, test=test, history=history, context=context, test_date=test_date)


def align_to_rows(context: pd.DataFrame, proba: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """Pick the probabilities predicted on `context` for the timestamps of `rows` (NaN if absent)."""
    by_time = pd.Series(np.asarray(proba, dtype="float64"), index=pd.DatetimeIndex(context["timestamp"]))
    return by_time.reindex(pd.DatetimeIndex(rows["timestamp"])).to_numpy()
