"""The raw candle contract shared by every source: one row per 1-minute bar of one UTC day.

Columns: timestamp (bar open time, UTC), open, high, low, close, volume (base currency).
Bars the source did not have are absent: missing minutes are reported, never invented.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

OHLCV_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]
BARS_PER_DAY = 1440
MINUTE = pd.Timedelta(minutes=1)
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"


class MarketDataError(RuntimeError):
    """A source could not deliver a day of candles; the message says which and why."""


class ExchangeBanned(MarketDataError):
    """The exchange has banned this IP: every further request extends the ban, so a run stops at once."""


def utc_timestamps(values):
    """pd.to_datetime(values, utc=True) without its cache of repeated values: building that cache scans
    every element, 12 ms for a 13-day window of UTC timestamps that need no conversion at all."""
    return pd.to_datetime(values, utc=True, cache=False)


def day_start(date: dt.date) -> pd.Timestamp:
    return pd.Timestamp(date.isoformat(), tz="UTC")


def day_minutes(date: dt.date) -> pd.DatetimeIndex:
    """The 1440 bar open times of a UTC day."""
    return pd.date_range(day_start(date), periods=BARS_PER_DAY, freq="min").astype(TIMESTAMP_DTYPE)


def frame_from_rows(rows, unit: str = "ms") -> pd.DataFrame:
    """Build the contract frame from `[open_time, o, h, l, c, v, ...]` rows (ccxt, Binance, JSON dumps)."""
    if len(rows) == 0:
        return empty_frame()
    arr = np.asarray([list(r[:6]) for r in rows], dtype=object)
    df = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(arr[:, 0].astype("int64"), unit=unit, utc=True),
            **{c: arr[:, i + 1].astype("float64") for i, c in enumerate(OHLCV_COLUMNS[1:])},
        }
    )
    return normalize(df)


def empty_frame() -> pd.DataFrame:
    return normalize(pd.DataFrame({c: [] for c in OHLCV_COLUMNS}))


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Fix column order and dtypes so every source writes identical parquet schemas."""
    out = pd.DataFrame(
        {
            "timestamp": utc_timestamps(df["timestamp"]).astype(TIMESTAMP_DTYPE),
            **{c: df[c].astype("float64") for c in OHLCV_COLUMNS[1:]},
        }
    )
    return out.reset_index(drop=True)


def one_bar_per_minute(bars: pd.DataFrame, where: str) -> pd.DataFrame:
    """`bars` (time ordered) with exact repeats dropped (a dump appended twice); two different rows
    for one minute are refused with both named, since which one is true cannot be known."""
    unique = bars.loc[~bars.duplicated()].reset_index(drop=True)
    clash = unique["timestamp"].duplicated(keep=False)
    if clash.any():
        first = unique.loc[clash, "timestamp"].iloc[0]
        rows = unique.loc[unique["timestamp"] == first, OHLCV_COLUMNS[1:]].itertuples(index=False)
        raise MarketDataError(
            f"{where}: {unique.loc[clash, 'timestamp'].nunique()} minute(s) with conflicting rows, the first "
            f"{first:%Y-%m-%d %H:%M}: " + " and ".join(f"[{', '.join(f'{v:g}' for v in row)}]" for row in rows)
            + " (open, high, low, close, volume); which one is true cannot be known, the day is not written"
        )
    return unique


def select_day(df: pd.DataFrame, date: dt.date) -> pd.DataFrame:
    """Keep only the bars that open within the UTC day, in time order."""
    start = day_start(date)
    mask = (df["timestamp"] >= start) & (df["timestamp"] < start + pd.Timedelta(days=1))
    return df.loc[mask].sort_values("timestamp", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Gap:
    """A run of missing minutes: first and last missing bar open time."""

    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def minutes(self) -> int:
        return int((self.end - self.start) / MINUTE) + 1

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M}..{self.end:%H:%M} ({self.minutes} min)"


def find_gaps(df: pd.DataFrame, date: dt.date) -> list[Gap]:
    """Runs of minutes of the day that have no bar."""
    expected = day_minutes(date)
    present = expected.isin(pd.DatetimeIndex(df["timestamp"]))
    gaps: list[Gap] = []
    missing_idx = np.flatnonzero(~present)
    if missing_idx.size == 0:
        return gaps
    breaks = np.flatnonzero(np.diff(missing_idx) > 1)
    starts = np.concatenate([[missing_idx[0]], missing_idx[breaks + 1]])
    ends = np.concatenate([missing_idx[breaks], [missing_idx[-1]]])
    return [Gap(expected[s], expected[e]) for s, e in zip(starts, ends)]


HALT_MIN_MINUTES = 10  # a run of this many zero-volume bars looks like a trading halt


def zero_volume_streaks(df: pd.DataFrame, min_length: int = HALT_MIN_MINUTES) -> list[Gap]:
    """Runs of at least `min_length` consecutive zero-volume bars (exchange halts look like this)."""
    zero = (df["volume"].to_numpy() == 0).astype(np.int8)
    if not zero.any():
        return []
    edges = np.diff(np.concatenate([[0], zero, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    ts = df["timestamp"]
    return [
        Gap(ts.iloc[s], ts.iloc[e])
        for s, e in zip(starts, ends)
        if e - s + 1 >= min_length
    ]
