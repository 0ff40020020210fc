"""Walk-forward purged splits and the train/test split of a feature window: no label leaks forward."""
import datetime as dt
import tempfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from levibot_assets.core.dataset import DatasetError, DayCache, load_feature_window, split_window
from levibot_assets.core.features import CONTRACT_ATTR, FEATURE_COLUMNS, FEATURE_FRAME_COLUMNS, MAX_LOOKBACK, feature_contract
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.tables import write_table
from levibot_assets.core.ohlcv import MINUTE, day_start
from levibot_assets.core.splits import SplitError, purge_gap, walk_forward_splits

START = pd.Timestamp("2023-04-01", tz="UTC")
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="levibot-hypothesis-"))  # never write into the repo


@st.composite
def timestamps_with_gaps(draw):
    """Sorted minute timestamps: runs of present bars separated by random gaps."""
    runs = draw(st.lists(st.tuples(st.integers(1, 600), st.integers(1, 300)), min_size=1, max_size=8))
    offsets, t = [], 0
    for present, gap in runs:
        offsets.extend(range(t, t + present))
        t += present + gap
    return pd.Series(START + pd.to_timedelta(offsets, unit="min"))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(ts=timestamps_with_gaps(), horizon=st.integers(1, 120), n_folds=st.integers(1, 5))
def test_no_training_label_reaches_its_validation_fold(ts, horizon, n_folds):
    try:
        folds = walk_forward_splits(ts, horizon, n_folds=n_folds, min_train_rows=1)
    except SplitError:
        assume(False)
    assert len(folds) == n_folds
    previous_valid_end = None
    for fold in folds:
        train, valid = ts.iloc[fold.train], ts.iloc[fold.valid]
        last_label_end = train.max() + horizon * MINUTE  # the label of row t looks at t .. t+H
        assert last_label_end < valid.min()
        assert valid.min() - train.max() >= (horizon + MAX_LOOKBACK) * MINUTE
        assert not set(fold.train) & set(fold.valid)
        if previous_valid_end is not None:
            assert valid.min() > previous_valid_end  # folds walk forward in time
        previous_valid_end = valid.max()


def _frame(times: pd.DatetimeIndex, rng: np.random.Generator) -> pd.DataFrame:
    frame = pd.DataFrame({"timestamp": times, "close": 100.0})
    for column in FEATURE_COLUMNS:
        frame[column] = rng.normal(size=len(times))
    frame["fwd_return"] = rng.normal(scale=1e-3, size=len(times))
    frame["label"] = (frame["fwd_return"] > 0).astype("float64")
    frame["label_available"] = True
    return frame[FEATURE_FRAME_COLUMNS]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_days=st.integers(2, 5),
    missing=st.sets(st.integers(0, 3)),
    cut=st.integers(0, 1439),
    horizon=st.integers(1, 240),
    seed=st.integers(0, 2**16),
)
def test_no_training_label_reaches_the_test_day(n_days, missing, cut, horizon, seed):
    """Random windows (missing days, a gap late in the last training day): purged before the test day."""
    rng = np.random.default_rng(seed)
    test_date = dt.date(2023, 4, 10)
    window = {}
    for back in range(n_days - 1, -1, -1):
        date = test_date - dt.timedelta(days=back)
        if back and back - 1 in missing:
            continue
        times = pd.date_range(day_start(date), periods=1440, freq="min")
        if back == 1:
            times = times[:cut].append(times[cut + 37:])  # a gap near the end of the last training day
        window[date.isoformat()] = _frame(times, rng)
    try:
        data = split_window(window, test_date, horizon, min_train_rows=1, min_test_rows=1)
    except DatasetError as exc:
        assume("too few training rows" not in str(exc) and "no training days" not in str(exc))
        raise
    test_start = day_start(test_date)
    assert (data.train["timestamp"] + horizon * MINUTE < test_start).all()
    assert test_start - data.train["timestamp"].max() >= purge_gap(horizon)
    assert (data.history["timestamp"] < test_start - purge_gap(horizon)).all()
    assert purge_gap(horizon) >= (horizon + MAX_LOOKBACK) * MINUTE
    assert (data.test["timestamp"] >= test_start).all()
    assert data.train["timestamp"].is_monotonic_increasing


def test_unsorted_or_too_short_rows_are_refused():
    ts = pd.Series(START + pd.to_timedelta(np.arange(300), unit="min"))
    with pytest.raises(SplitError, match="strictly increasing"):
        walk_forward_splits(ts[::-1], 15)
    with pytest.raises(SplitError, match="too short"):
        walk_forward_splits(ts, 15, n_folds=3, min_train_rows=200)
    with pytest.raises(SplitError, match="no rows"):
        walk_forward_splits(ts.iloc[:0], 15)


def _stored_day(layout: DataLayout, date: dt.date, seed: int) -> pd.DataFrame:
    frame = _frame(pd.date_range(day_start(date), periods=1440, freq="min"), np.random.default_rng(seed))
    frame.attrs[CONTRACT_ATTR] = feature_contract(15)
    write_table(layout, "features", date, "BTCUSDT", frame)
    return frame


def test_windows_read_through_a_day_cache_share_days_and_see_rewrites(tmp_path):
    """Consecutive windows share their common days; a rewritten day is read again; the cache is bounded."""
    layout = DataLayout(tmp_path)
    first = dt.date(2023, 4, 1)
    for k in range(5):
        _stored_day(layout, first + dt.timedelta(days=k), seed=k)
    cache = DayCache(capacity=4)
    windows = [load_feature_window(layout, "BTCUSDT", first + dt.timedelta(days=k), 3, 15, cache) for k in (2, 3)]
    plain = [load_feature_window(layout, "BTCUSDT", first + dt.timedelta(days=k), 3, 15) for k in (2, 3)]
    for window, plain in zip(windows, plain):
        assert list(window) == list(plain)
        for day in window:
            pd.testing.assert_frame_equal(window[day], plain[day])
    assert windows[0]["2023-04-02"] is windows[1]["2023-04-02"] and windows[0]["2023-04-03"] is windows[1]["2023-04-03"]

    rewritten = _stored_day(layout, dt.date(2023, 4, 4), seed=99)
    again = load_feature_window(layout, "BTCUSDT", dt.date(2023, 4, 4), 3, 15, cache)
    pd.testing.assert_frame_equal(again["2023-04-04"], rewritten)
    assert again["2023-04-03"] is windows[1]["2023-04-03"]

    load_feature_window(layout, "BTCUSDT", dt.date(2023, 4, 5), 1, 15, cache)  # a fifth day: the least recently used goes
    assert load_feature_window(layout, "BTCUSDT", first, 1, 15, cache)["2023-04-01"] is not windows[0]["2023-04-01"]
    assert load_feature_window(layout, "BTCUSDT", dt.date(2023, 4, 3), 1, 15, cache)["2023-04-03"] is windows[1]["2023-04-03"]
