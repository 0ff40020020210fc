"""Dated parquet tables (raw_ohlcv, features): one file per (asset, date, symbol).

Assets read and write them one partition at a time, so a range run holds one day in memory, not
the range. Writes are atomic (core.atomic); reads name the file when it is missing or unreadable.
"""
from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import pyarrow

from levibot_assets.core import object_store
from levibot_assets.core.atomic import atomic_write_parquet, read_bytes
from levibot_assets.core.layout import DataLayout, partition_label


class MissingPartition(FileNotFoundError):
    """An upstream partition that was never materialized (the message says what to run)."""


def write_table(layout: DataLayout, asset: str, date: dt.date | str, symbol: str, frame: pd.DataFrame) -> Path:
    return atomic_write_parquet(layout.table(asset, date, symbol), frame)


def read_parquet_file(path: Path) -> pd.DataFrame:
    """pandas.read_parquet, naming the file: pyarrow reports a corrupt one as '<Buffer>'."""
    try:
        return pd.read_parquet(io.BytesIO(read_bytes(path)) if object_store.is_remote(path) else path)
    except (pyarrow.ArrowException, ValueError) as exc:
        reason = str(exc).split("'<Buffer>': ", 1)[-1]
        raise ValueError(f"{path} is not a readable parquet file: {reason}") from None


def missing_partition(asset: str, date: dt.date | str, symbol: str, path: Path) -> MissingPartition:
    """The error for an upstream partition whose file `path` is not there, saying what to materialize."""
    key = partition_label(date, symbol)
    return MissingPartition(
        f"{asset} partition {key} has not been materialized (no file {path}): materialize {asset} for {key} first"
    )


def read_table(layout: DataLayout, asset: str, date: dt.date | str, symbol: str) -> pd.DataFrame:
    path = layout.table(asset, date, symbol)
    if not path.exists():
        raise missing_partition(asset, date, symbol, path)
    return read_parquet_file(path)


def read_window(
    layout: DataLayout, asset: str, symbol: str, dates: Iterable[dt.date],
    read: Callable[[Path], pd.DataFrame] = read_parquet_file,
) -> dict[str, pd.DataFrame]:
    """{"YYYY-MM-DD": frame} for the dates that have a file, oldest first; absent days are left out.
    `read` reads one file (a cache of the run's days may stand in for read_parquet_file)."""
    return {
        day.isoformat(): read(layout.table(asset, day, symbol))
        for day in sorted(dates)
        if layout.table(asset, day, symbol).exists()
    }


def trailing_dates(date: dt.date, days: int) -> list[dt.date]:
    """`date` and the `days - 1` dates before it, oldest first."""
    return [date - dt.timedelta(days=k) for k in range(days - 1, -1, -1)]
