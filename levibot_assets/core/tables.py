"""Dated parquet tables (raw_ohlcv, features): one file per (asset, date, symbol).

Assets read and write them one partition at a time, so a range run holds one day in memory, not
the range. Writes are atomic and record the file's sha256 beside it (atomic_write_parquet);
every read checks it and the pages' own checksums, and refuses a damaged file naming it and the
partition to materialize again, so a flipped bit never reaches a feature or a model.
"""
from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import pyarrow

from levibot_assets.core.integrity import DamagedFile, read_checked, write_checked
from levibot_assets.core.layout import DataLayout, partition_label


class MissingPartition(FileNotFoundError):
    """An upstream partition that was never materialized (the message says what to run)."""


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """Serialise deterministically: the same frame always gives the same bytes."""
    buffer = io.BytesIO()
    df.to_parquet(buffer, engine="pyarrow", index=False, compression="zstd", write_page_checksum=True)
    return buffer.getvalue()


def atomic_write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """A parquet file (with page checksums) and its sha256 beside it: read_parquet_file verifies both."""
    return write_checked(path, parquet_bytes(df))


def write_table(layout: DataLayout, asset: str, date: dt.date | str, symbol: str, frame: pd.DataFrame) -> Path:
    return atomic_write_parquet(layout.table(asset, date, symbol), frame)


def read_parquet_file(path: Path, producer: str | None = None) -> pd.DataFrame:
    """The verified file as a frame; DamagedFile naming the file and the partition that rewrites it.

    `producer` is the asset that writes the file when it is not the table's own (predictions: best_release).
    """
    asset, date, symbol = DataLayout.table_partition(path)
    remedy = f"materialize {producer or asset} for {partition_label(date, symbol)} again"
    try:
        data = read_checked(path)
    except DamagedFile as exc:
        raise DamagedFile(f"{exc}; {remedy}") from None
    try:
        return pd.read_parquet(io.BytesIO(data), page_checksum_verification=True)
    except (pyarrow.ArrowException, ValueError) as exc:
        reason = str(exc).split("'<Buffer>': ", 1)[-1]  # pyarrow names the file '<Buffer>'
        raise DamagedFile(f"{path} is not a readable parquet file: {reason}; {remedy}") from None


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
