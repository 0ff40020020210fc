"""Per-bar features and the direction label, vectorised, computed on the complete minute grid.

Inputs are the day's bars plus the previous day's as warm-up, so indicators are right from the
day's first minute. Missing minutes stay missing: a rolling feature whose window touches a gap is
NaN, and so is a label whose horizon bar is absent. Only the label looks ahead.

Definitions (c = close, v = volume, r = 1-bar log return ln(c_t / c_{t-1})):
    ret_1          ln(c_t / c_{t-1})
    ret_5          ln(c_t / c_{t-5})
    ret_15         ln(c_t / c_{t-15})
    sma_20_ratio   c_t / mean(c_{t-19..t}) - 1
    sma_50_ratio   c_t / mean(c_{t-49..t}) - 1
    ema_12_ratio   c_t / EMA12_t - 1, EMA_t = a*c_t + (1-a)*EMA_{t-1}, a = 2/(span+1), over present bars
    ema_26_ratio   c_t / EMA26_t - 1
    macd           (EMA12_t - EMA26_t) / c_t
    volatility_30  sample std of r over the last 30 bars
    range_hl       (high_t - low_t) / c_t
    volume_rel_30  v_t / mean(v_{t-29..t})     (NaN when that mean is 0, e.g. during a halt)
    log_volume     ln(1 + v_t)
    rsi_14         100 - 100 / (1 + mean(gains over 14 bars) / mean(losses over 14 bars))
    minute_sin, minute_cos   time of day as a point on the unit circle
Label (horizon H bars):
    fwd_return     ln(c_{t+H} / c_t)
    label          1.0 if c_{t+H} > c_t else 0.0; NaN when c_{t+H} is not in the data
    label_available  whether the label is known (False near the end of the data or before a gap)
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from levibot_assets.core.ohlcv import MINUTE, day_start

FEATURE_COLUMNS = [
    "ret_1",
    "ret_5",
    "ret_15",
    "sma_20_ratio",
    "sma_50_ratio",
    "ema_12_ratio",
    "ema_26_ratio",
    "macd",
    "volatility_30",
    "range_hl",
    "volume_rel_30",
    "log_volume",
    "rsi_14",
    "minute_sin",
    "minute_cos",
]
LABEL_COLUMN = "label"
FORWARD_RETURN_COLUMN = "fwd_return"
LABEL_AVAILABLE_COLUMN = "label_available"
MAX_LOOKBACK = 50  # bars: the longest rolling window above (SMA 50)
FEATURE_FRAME_COLUMNS = ["timestamp", "close", *FEATURE_COLUMNS, FORWARD_RETURN_COLUMN, LABEL_COLUMN, LABEL_AVAILABLE_COLUMN]


# Bump when any feature or the label is computed differently: stored features of another version
# are refused by the models, and the assets' code_version changes so the UI marks them stale.
FEATURE_SET_VERSION = 1
CONTRACT_ATTR = "levibot_contract"  # kept in DataFrame.attrs, which parquet stores with the table


class FeatureError(ValueError):
    """The candles cannot be turned into features (message says why)."""


class FeatureContractError(ValueError):
    """Stored features were made under another contract (feature set or label horizon)."""


def feature_contract(horizon: int) -> dict[str, int]:
    """What a features frame promises its readers: which features, and the label's horizon in bars."""
    return {"feature_set": FEATURE_SET_VERSION, "label_horizon": horizon}


def contract_version(horizon: int) -> str:
    """The contract as a Dagster code_version: a change marks stored partitions stale in the UI."""
    return f"fs{FEATURE_SET_VERSION}.h{horizon}"


def check_contract(frame: pd.DataFrame, horizon: int, what: str) -> None:
    """Refuse features made with another feature set or label horizon than the reader expects."""
    expected = feature_contract(horizon)
    found = frame.attrs.get(CONTRACT_ATTR)
    if found != expected:
        made = f"made with {found}" if found else "stored without a contract (made by an older version)"
        raise FeatureContractError(
            f"{what}: {made}, expected {expected}: re-materialize features for these days "
            "(LEVIBOT_LABEL_HORIZON or the feature code changed since)"
        )


def _on_minute_grid(bars: pd.DataFrame) -> pd.DataFrame:
    if bars["timestamp"].duplicated().any():
        raise FeatureError("duplicate bar timestamps: the raw partition is inconsistent")
    bars = bars.sort_values("timestamp").set_index("timestamp")
    grid = pd.date_range(bars.index[0], bars.index[-1], freq=MINUTE)
    return bars.reindex(grid)


def _ema(close: pd.Series, span: int) -> pd.Series:
    present = close.dropna()
    ema = present.ewm(span=span, adjust=False, min_periods=span).mean()
    return ema.reindex(close.index)


def _rsi(close: pd.Series, window: int = 14) -> pd.Series:
    delta = close.diff()
    gains = delta.clip(lower=0).rolling(window, min_periods=window).mean()
    losses = (-delta.clip(upper=0)).rolling(window, min_periods=window).mean()
    rs = gains / losses
    rsi = 100 - 100 / (1 + rs)
    return rsi.where(losses != 0, 100.0).where(gains.notna() & losses.notna())


def compute_features(bars: pd.DataFrame, date: dt.date, horizon: int = 15) -> pd.DataFrame:
    """Features and label for the bars of `date`; `bars` may include earlier days as warm-up.

    Bars after `date` (if given) are used only to complete labels near the end of the day.
    """
    if horizon < 1:
        raise FeatureError(f"label horizon must be >= 1 bar, got {horizon}")
    start = day_start(date)
    end = start + pd.Timedelta(days=1)
    if bars.empty or not ((bars["timestamp"] >= start) & (bars["timestamp"] < end)).any():
        raise FeatureError(f"no candles for {date}: nothing to compute features from")
    grid = _on_minute_grid(bars)
    c, v = grid["close"], grid["volume"]
    log_c = np.log(c)
    r = log_c.diff()
    ema12, ema26 = _ema(c, 12), _ema(c, 26)
    vol_mean = v.rolling(30, min_periods=30).mean()
    minute = (grid.index.hour * 60 + grid.index.minute).to_numpy()
    angle = 2 * np.pi * minute / 1440
    future = log_c.shift(-horizon)
    out = pd.DataFrame(
        {
            "close": c,
            "ret_1": r,
            "ret_5": log_c - log_c.shift(5),
            "ret_15": log_c - log_c.shift(15),
            "sma_20_ratio": c / c.rolling(20, min_periods=20).mean() - 1,
            "sma_50_ratio": c / c.rolling(50, min_periods=50).mean() - 1,
            "ema_12_ratio": c / ema12 - 1,
            "ema_26_ratio": c / ema26 - 1,
            "macd": (ema12 - ema26) / c,
            "volatility_30": r.rolling(30, min_periods=30).std(),
            "range_hl": (grid["high"] - grid["low"]) / c,
            "volume_rel_30": (v / vol_mean).where(vol_mean > 0),
            "log_volume": np.log1p(v),
            "rsi_14": _rsi(c),
            "minute_sin": np.sin(angle),
            "minute_cos": np.cos(angle),
            FORWARD_RETURN_COLUMN: future - log_c,
        },
        index=grid.index,
    )
    out[LABEL_AVAILABLE_COLUMN] = out[FORWARD_RETURN_COLUMN].notna()
    out[LABEL_COLUMN] = (out[FORWARD_RETURN_COLUMN] > 0).astype("float64").where(out[LABEL_AVAILABLE_COLUMN])
    present = grid["close"].notna()
    in_day = (grid.index >= start) & (grid.index < end)
    out = out.loc[present & in_day]
    out.index.name = "timestamp"
    frame = out.reset_index()[FEATURE_FRAME_COLUMNS]
    frame.attrs[CONTRACT_ATTR] = feature_contract(horizon)
    return frame


def training_rows(features: pd.DataFrame) -> pd.DataFrame:
    """Rows usable for training or scoring: known label, all features finite."""
    finite = np.isfinite(features[FEATURE_COLUMNS].to_numpy(dtype="float64")).all(axis=1)
    return features.loc[finite & features[LABEL_AVAILABLE_COLUMN].to_numpy()].reset_index(drop=True)
