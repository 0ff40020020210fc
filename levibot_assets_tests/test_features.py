"""Features against straightforward loop-based reference computations, warm-up and gaps."""
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from levibot_assets.core.features import (
    FEATURE_COLUMNS,
    FEATURE_FRAME_COLUMNS,
    FeatureError,
    compute_features,
    training_rows,
)
from levibot_assets.core.sources.synthetic import synthetic_day

DAY = dt.date(2025, 10, 13)
H = 15


@pytest.fixture(scope="module")
def two_days():
    return pd.concat([synthetic_day("ETHUSDT", DAY - dt.timedelta(days=1)), synthetic_day("ETHUSDT", DAY)], ignore_index=True)


@pytest.fixture(scope="module")
def feats(two_days):
    return compute_features(two_days, DAY, H)


def _ref_ema(values, span):
    alpha = 2 / (span + 1)
    out, ema = [], None
    for v in values:
        ema = v if ema is None else alpha * v + (1 - alpha) * ema
        out.append(ema)
    return out


def test_columns_and_rows(feats):
    assert list(feats.columns) == FEATURE_FRAME_COLUMNS
    assert len(feats) == 1440
    assert feats["timestamp"].iloc[0] == pd.Timestamp("2025-10-13", tz="UTC")


def test_warm_up_makes_first_minute_complete(feats):
    assert np.isfinite(feats.loc[0, FEATURE_COLUMNS].astype(float)).all()


def test_against_reference(two_days, feats):
    c = two_days["close"].tolist()
    v = two_days["volume"].tolist()
    h, lo = two_days["high"].tolist(), two_days["low"].tolist()
    ema12, ema26 = _ref_ema(c, 12), _ref_ema(c, 26)
    for row in [0, 1, 37, 700, 1424]:
        t = 1440 + row
        f = feats.iloc[row]
        r = [math.log(c[i] / c[i - 1]) for i in range(t - 29, t + 1)]
        mean_r = sum(r) / 30
        expected = {
            "ret_1": math.log(c[t] / c[t - 1]),
            "ret_5": math.log(c[t] / c[t - 5]),
            "ret_15": math.log(c[t] / c[t - 15]),
            "sma_20_ratio": c[t] / (sum(c[t - 19 : t + 1]) / 20) - 1,
            "sma_50_ratio": c[t] / (sum(c[t - 49 : t + 1]) / 50) - 1,
            "ema_12_ratio": c[t] / ema12[t] - 1,
            "ema_26_ratio": c[t] / ema26[t] - 1,
            "macd": (ema12[t] - ema26[t]) / c[t],
            "volatility_30": math.sqrt(sum((x - mean_r) ** 2 for x in r) / 29),
            "range_hl": (h[t] - lo[t]) / c[t],
            "volume_rel_30": v[t] / (sum(v[t - 29 : t + 1]) / 30),
            "log_volume": math.log1p(v[t]),
            "minute_sin": math.sin(2 * math.pi * row / 1440),
            "minute_cos": math.cos(2 * math.pi * row / 1440),
        }
        diffs = [c[i] - c[i - 1] for i in range(t - 13, t + 1)]
        gain = sum(d for d in diffs if d > 0) / 14
        loss = sum(-d for d in diffs if d < 0) / 14
        expected["rsi_14"] = 100 - 100 / (1 + gain / loss)
        for name, value in expected.items():
            assert f[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
        assert f["fwd_return"] == pytest.approx(math.log(c[t + H] / c[t]))
        assert f["label"] == (1.0 if c[t + H] > c[t] else 0.0)


def test_label_marked_unavailable_at_end_of_data(feats):
    tail = feats.tail(H)
    assert not tail["label_available"].any() and tail["label"].isna().all()
    assert feats["label_available"].iloc[: 1440 - H].all()
    assert len(training_rows(feats)) == 1440 - H


def test_no_lookahead_except_label(two_days, feats):
    """Changing the future leaves every feature of the past unchanged."""
    altered = two_days.copy()
    cut = 1440 + 900
    altered.loc[cut:, ["open", "high", "low", "close"]] *= 1.5
    altered.loc[cut:, "volume"] *= 3
    again = compute_features(altered, DAY, H)
    past = slice(0, 900 - 1)
    pd.testing.assert_frame_equal(again.loc[past, FEATURE_COLUMNS], feats.loc[past, FEATURE_COLUMNS])


def test_gap_makes_touching_windows_nan_and_invents_no_rows(two_days):
    bars = two_days.drop(index=range(1440 + 600, 1440 + 610)).reset_index(drop=True)
    f = compute_features(bars, DAY, H)
    assert len(f) == 1430
    after_gap = f[f["timestamp"] == pd.Timestamp("2025-10-13 10:10", tz="UTC")].iloc[0]
    assert np.isnan(after_gap["ret_1"]) and np.isnan(after_gap["sma_20_ratio"])
    late = f[f["timestamp"] == pd.Timestamp("2025-10-13 11:10", tz="UTC")].iloc[0]
    assert np.isfinite(late[FEATURE_COLUMNS].astype(float)).all()
    before_gap = f[f["timestamp"] == pd.Timestamp("2025-10-13 09:50", tz="UTC")].iloc[0]
    assert not before_gap["label_available"]


def test_cold_start_without_warm_up_is_nan_not_wrong():
    f = compute_features(synthetic_day("BTCUSDT", DAY), DAY, H)
    assert np.isnan(f.loc[0, "sma_50_ratio"]) and np.isfinite(f.loc[60, "sma_50_ratio"])


def test_bad_inputs():
    with pytest.raises(FeatureError, match="no candles"):
        compute_features(synthetic_day("BTCUSDT", DAY), DAY + dt.timedelta(days=1), H)
    bars = synthetic_day("BTCUSDT", DAY)
    with pytest.raises(FeatureError, match="duplicate"):
        compute_features(pd.concat([bars, bars.iloc[:3]]), DAY, H)
    with pytest.raises(FeatureError, match="horizon"):
        compute_features(bars, DAY, 0)
