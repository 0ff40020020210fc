"""Quality rules on hand-made faults, synthetic days and the real halt day of 2023-03-24."""
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from levibot_assets.core import quality
from levibot_assets.core.features import FEATURE_COLUMNS, MAX_LOOKBACK, compute_features
from levibot_assets.core.integrity import sha256_file
from levibot_assets.core.ohlcv import frame_from_rows, select_day
from levibot_assets.core.sources.synthetic import synthetic_day

DAY = dt.date(2025, 10, 13)


@pytest.fixture(scope="module")
def bars():
    return synthetic_day("BTCUSDT", DAY)


@pytest.fixture(scope="module")
def feats():
    warm = pd.concat([synthetic_day("BTCUSDT", DAY - dt.timedelta(days=1)), synthetic_day("BTCUSDT", DAY)])
    return compute_features(warm, DAY, 15)


@pytest.fixture
def halt_day(shared_data_dir):
    rows = json.loads((shared_data_dir / "BTC_USDT-1m.json").read_text())
    return select_day(frame_from_rows(rows), dt.date(2023, 3, 24))


def test_clean_synthetic_day_passes_every_raw_rule(bars):
    for result in (quality.raw_consistency(bars), quality.raw_completeness(bars, DAY), quality.raw_halts(bars),
                   quality.raw_spikes(bars)):
        assert result.passed, result.description
    assert quality.raw_completeness(bars, DAY).metadata["bars"] == 1440


def test_duplicate_and_unordered_timestamps_are_reported(bars):
    broken = pd.concat([bars.iloc[:10], bars.iloc[[5]], bars.iloc[10:]], ignore_index=True)
    result = quality.raw_consistency(broken)
    assert not result.passed
    assert result.metadata["duplicate_timestamps"] == 1
    assert result.metadata["unordered_timestamps"] == 1
    assert "00:05" in result.description


def test_price_and_volume_violations_are_counted(bars):
    broken = bars.copy()
    broken.loc[3, "low"] = broken.loc[3, "close"] + 1  # low above close
    broken.loc[4, "high"] = broken.loc[4, "open"] - 1  # high below open
    broken.loc[7, "open"] = -1.0
    broken.loc[8, "volume"] = -5.0
    broken.loc[9, "close"] = np.nan
    m = quality.raw_consistency(broken).metadata
    assert m["negative_volume"] == 1 and m["non_positive_prices"] == 1 and m["non_finite_values"] == 1
    assert m["inconsistent_ohlc"] >= 3  # rows 3, 4 and the negative open
    assert m["duplicate_timestamps"] == 0


def test_missing_columns_is_a_clear_failure(bars):
    result = quality.raw_consistency(bars.drop(columns=["volume"]))
    assert not result.passed and "volume" in result.description


def test_gaps_are_listed_with_times(bars):
    holed = bars.drop(index=range(60, 75)).reset_index(drop=True)
    result = quality.raw_completeness(holed, DAY)
    assert not result.passed
    assert result.metadata["missing_minutes"] == 15 and result.metadata["gaps"] == 1
    assert result.metadata["gap_times"] == ["2025-10-13 01:00..01:14 (15 min)"]


def test_real_halt_day_gaps_and_zero_volume_streak(halt_day):
    completeness = quality.raw_completeness(halt_day, dt.date(2023, 3, 24))
    halts = quality.raw_halts(halt_day)
    assert quality.raw_consistency(halt_day).passed
    assert not completeness.passed and completeness.metadata["missing_minutes"] == 80
    assert "12:40..13:59" in completeness.description
    assert not halts.passed and halts.metadata["zero_volume_bars_in_streaks"] == 72
    assert "11:28..12:39" in halts.description


def spiked(bars: pd.DataFrame, row: int, factor: float) -> pd.DataFrame:
    """One bar whose close and high (factor > 1) or close and low (factor < 1) are `factor` times the market."""
    out = bars.copy()
    column = "high" if factor > 1 else "low"
    out.loc[row, ["close", column]] = out.loc[row, "close"] * factor
    return out


@pytest.mark.parametrize("row", [0, 1, 700, 1438, 1439])
@pytest.mark.parametrize("factor", [1000.0, 0.001, 1.6])
def test_a_one_bar_spike_anywhere_in_the_day_is_found(bars, row, factor):
    result = quality.raw_spikes(spiked(bars, row, factor))
    assert not result.passed and result.metadata["spiked_bars"] == 1
    assert f"{bars['timestamp'].iloc[row]:%H:%M}" in result.description


def test_two_spiked_bars_in_a_row_are_both_found(bars):
    result = quality.raw_spikes(spiked(spiked(bars, 700, 1000.0), 701, 1000.0))
    assert result.metadata["spike_times"] == ["11:40", "11:41"]


@pytest.mark.parametrize("row", [0, 700])
def test_a_crash_that_stays_down_is_not_a_spike(bars, row):
    crashed = bars.copy()
    after = crashed.index >= row
    crashed.loc[after, ["open", "high", "low", "close"]] *= 0.4  # -60 % in one minute, and it stays there
    crashed.loc[row, ["open", "high"]] = bars.loc[row, ["open", "high"]]  # the crash bar opens at the old level
    result = quality.raw_spikes(crashed)
    assert quality.raw_consistency(crashed).passed
    assert result.passed, result.description


def test_no_real_day_of_the_shared_data_has_a_spike(shared_data_dir):
    """The bound is 10x (in log terms) the largest one-bar-and-back move measured here (SOL, 1.041)."""
    largest = 1.0
    for name in ("BTC_USDT", "ETH_USDT", "SOL_USDT"):
        all_bars = frame_from_rows(json.loads((shared_data_dir / f"{name}-1m.json").read_text()))
        for offset in range(47):
            day = select_day(all_bars, dt.date(2023, 3, 16) + dt.timedelta(days=offset))
            result = quality.raw_spikes(day)
            assert result.passed, (name, offset, result.description)
            largest = max(largest, result.metadata["largest_spike_ratio"])
    assert 1.04 < largest < 1.042 and np.log(quality.SPIKE_MAX_RATIO) > 9.9 * np.log(largest)


def test_features_of_a_clean_day_pass(feats):
    assert quality.features_finite(feats).passed
    assert quality.features_complete_after_warmup(feats).passed
    balance = quality.label_balance(feats)
    assert balance.passed and 0.3 < balance.metadata["up_share"] < 0.7


def test_infinite_feature_fails(feats):
    broken = feats.copy()
    broken.loc[100, "macd"] = np.inf
    result = quality.features_finite(broken)
    assert not result.passed and result.metadata["infinite_values"] == 1 and "macd" in result.description


def test_nan_after_warmup_is_found_but_warmup_rows_are_allowed(feats):
    cold = compute_features(synthetic_day("BTCUSDT", DAY), DAY, 15)  # no previous day: cold start
    assert cold[FEATURE_COLUMNS].iloc[:MAX_LOOKBACK].isna().any(axis=None)
    assert quality.features_complete_after_warmup(cold).passed
    broken = feats.copy()
    broken.loc[500, "rsi_14"] = np.nan
    result = quality.features_complete_after_warmup(broken)
    assert not result.passed and result.metadata["missing_rsi_14"] == 1


def test_label_balance_bounds(feats):
    skewed = feats.copy()
    skewed["label"] = skewed["label"].where(~skewed["label_available"], 1.0)
    result = quality.label_balance(skewed)
    assert not result.passed and result.metadata["up_share"] == 1.0


@pytest.mark.parametrize(
    "metric,score,passed", [("auc", 0.56, True), ("auc", 0.54, False), ("log_loss", 0.68, True), ("log_loss", 0.70, False)]
)
def test_beats_baselines_respects_metric_direction(metric, score, passed):
    baselines = {"auc": {"majority": 0.5, "logistic": 0.55}, "log_loss": {"majority": 0.693, "logistic": 0.69}}[metric]
    result = quality.beats_baselines(metric, score, baselines)
    assert result.passed is passed
    assert result.metadata["best_baseline"] == "logistic"


def test_train_test_overlap_and_purge():
    t0 = pd.Timestamp("2025-10-13", tz="UTC")
    assert quality.train_test_disjoint(t0 - pd.Timedelta(minutes=70), t0, pd.Timedelta(minutes=65)).passed
    assert not quality.train_test_disjoint(t0 - pd.Timedelta(minutes=10), t0, pd.Timedelta(minutes=65)).passed
    assert not quality.train_test_disjoint(t0 + pd.Timedelta(minutes=1), t0).passed


class _Constant:
    def __init__(self, p):
        self.p = p

    def predict_proba(self, frame):
        return np.full(len(frame), self.p)


def test_release_files_and_predictions(tmp_path, feats):
    (tmp_path / "model.txt").write_text("tree")
    sha = sha256_file(tmp_path / "model.txt")
    assert quality.release_files_intact(tmp_path, {"model.txt": sha}).passed
    (tmp_path / "model.txt").write_text("tampered")
    tampered = quality.release_files_intact(tmp_path, {"model.txt": sha, "gone.json": "0" * 64})
    assert not tampered.passed and tampered.metadata == {"files": 2, "missing_files": 1, "hash_mismatches": 1}
    assert quality.release_predicts(lambda: _Constant(0.6), feats).passed
    assert not quality.release_predicts(lambda: _Constant(1.5), feats).passed

    def broken_loader():
        raise OSError("checkpoint unreadable")

    failed = quality.release_predicts(broken_loader, feats)
    assert not failed.passed and "checkpoint unreadable" in failed.description
