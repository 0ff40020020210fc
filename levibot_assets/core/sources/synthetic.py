"""Deterministic synthetic candles for offline plumbing (never for claims about model quality).

Properties a pipeline should be exercised with: fat tails (Student-t shocks), volatility clustering
(GARCH(1,1) variance), intraday volume seasonality, and prices continuous across days: each day is
a bridge from its own opening level to the next day's, and daily levels are a seeded random walk,
so any (symbol, date) is generated alone and the same key always gives the same bars.
"""
from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pandas as pd

from levibot_assets.core.ohlcv import BARS_PER_DAY, day_minutes, normalize

_EPOCH = dt.date(2015, 1, 1)
_BASE_PRICE = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0}
_DAILY_VOL = 0.03
_MEAN_REVERSION = 0.995  # keeps prices near the base price over years
_GARCH = (0.05, 0.93)  # alpha, beta; omega follows from the target variance


def _seed(symbol: str, *parts: int) -> list[int]:
    digest = hashlib.sha256(symbol.encode()).digest()
    return [int.from_bytes(digest[:8], "little"), *parts]


def _base_price(symbol: str) -> float:
    if symbol in _BASE_PRICE:
        return _BASE_PRICE[symbol]
    return 1.0 + _seed(symbol)[0] % 10_000 / 100.0


def _log_level(symbol: str, date: dt.date) -> float:
    """Log price at 00:00 UTC of `date`: a seeded, slowly mean-reverting daily walk from the epoch."""
    days = (date - _EPOCH).days
    if days < 0:
        raise ValueError(f"synthetic data starts at {_EPOCH}, got {date}")
    steps = np.random.default_rng(_seed(symbol, 0)).standard_t(5, size=days) * _DAILY_VOL / np.sqrt(5 / 3)
    level = 0.0
    for step in steps:
        level = _MEAN_REVERSION * level + step
    return float(np.log(_base_price(symbol)) + level)


def synthetic_day(symbol: str, date: dt.date) -> pd.DataFrame:
    """The 1440 one-minute bars of `date` for `symbol`."""
    rng = np.random.default_rng(_seed(symbol, 1, date.toordinal()))
    start, end = _log_level(symbol, date), _log_level(symbol, date + dt.timedelta(days=1))
    alpha, beta = _GARCH
    target_var = (_DAILY_VOL**2) / BARS_PER_DAY
    omega = target_var * (1 - alpha - beta)
    shocks = rng.standard_t(4, size=BARS_PER_DAY) / np.sqrt(2.0)
    returns = np.empty(BARS_PER_DAY)
    var = target_var
    for i in range(BARS_PER_DAY):
        returns[i] = np.sqrt(var) * shocks[i]
        var = omega + alpha * returns[i] ** 2 + beta * var
    path = np.cumsum(returns)
    path -= np.arange(1, BARS_PER_DAY + 1) / BARS_PER_DAY * (path[-1] - (end - start))
    close = np.exp(start + path)
    open_ = np.exp(start + np.concatenate([[0.0], path[:-1]]))
    wick = np.abs(rng.standard_normal((2, BARS_PER_DAY))) * np.sqrt(target_var) * 0.5
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    minute = np.arange(BARS_PER_DAY)
    seasonality = 1.0 + 0.5 * np.sin(2 * np.pi * (minute / BARS_PER_DAY - 0.375)) ** 2
    activity = 1.0 + 20.0 * np.abs(returns) / np.sqrt(target_var) / 10.0
    volume = 100.0 / _base_price(symbol) * 1000 * seasonality * activity * rng.lognormal(0.0, 0.4, BARS_PER_DAY)
    return normalize(
        pd.DataFrame(
            {
                "timestamp": day_minutes(date),
                "open": open_.round(8),
                "high": high.round(8),
                "low": low.round(8),
                "close": close.round(8),
                "volume": volume.round(6),
            }
        )
    )
