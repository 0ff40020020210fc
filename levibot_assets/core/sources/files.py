"""One UTC day of 1-minute candles from kline dumps a user already has on disk.

Two formats, the first one found wins:
- Binance Vision daily klines `<SYMBOL>-1m-<YYYY-MM-DD>.zip` (or the unzipped `.csv`): 12 columns,
  no header, open time in milliseconds before 2025-01-01 and in MICROseconds from then on. When a
  `.CHECKSUM` file (`<sha256>  <file name>`) lies beside it, the file must match it.
- ccxt/freqtrade JSON dumps `<BASE>_<QUOTE>-1m.json`: one array of `[open_time_ms, o, h, l, c, v]`
  rows covering many days; the parsed file is cached per (path, mtime, size) so that backfilling
  90 partitions parses it once.
Bars are returned as the file has them: gaps stay gaps, nothing is invented. But a day is
complete or it fails: a day whose bars start late or end early is refused unless the file holds
bars before (or after) the day, i.e. the exchange itself had none then (a halt); a Binance Vision
file holds one day, so its day must run from 00:00 to 23:59. A minute held twice with different
values is refused with both rows named; an exact repeat is dropped.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Callable

import pandas as pd

from levibot_assets.core.ohlcv import (
    BARS_PER_DAY,
    MINUTE,
    OHLCV_COLUMNS,
    MarketDataError,
    day_start,
    frame_from_rows,
    normalize,
    one_bar_per_minute,
    select_day,
)
from levibot_assets.core.symbols import SymbolError, dump_prefix

BINANCE_VISION_COLUMNS = 12
# Open times at or above this are microseconds: as milliseconds it would be the year 5138.
_MICROSECOND_THRESHOLD = 10**14
_SHA256_RE = re.compile(r"^([0-9a-fA-F]{64})(?:\s+\*?(\S.*))?$")


def files_day(files_dir: str | os.PathLike, symbol: str, date: dt.date) -> pd.DataFrame:
    """The bars of `date` (UTC) for `symbol` from `files_dir`, in the core.ohlcv contract."""
    directory = Path(files_dir)
    if not directory.is_dir():
        raise MarketDataError(f"LEVIBOT_FILES_DIR {directory} is not a directory")
    looked_for = []
    for candidate in _vision_candidates(directory, symbol, date):
        if candidate.is_file():
            return _naming_the_file(_vision_day, candidate, date)
        looked_for.append(candidate)
    try:
        json_path = directory / f"{dump_prefix(symbol)}-1m.json"
    except SymbolError as exc:
        raise MarketDataError(f"{symbol} {date}: no Binance Vision file ({_names(looked_for)}) and {exc}") from None
    if json_path.is_file():
        return _naming_the_file(_json_day, json_path, date)
    looked_for.append(json_path)
    raise MarketDataError(f"{symbol} {date}: no kline dump found in {directory}; looked for {_names(looked_for)}")


def _naming_the_file(read: Callable[[Path, dt.date], pd.DataFrame], path: Path, date: dt.date) -> pd.DataFrame:
    """read(path, date), with the file named in any error: pandas and numpy name none when a CSV line
    is ragged, the bytes are not text or a value is not a number, and a backfill reads many files."""
    try:
        return read(path, date)
    except MarketDataError:
        raise
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        raise MarketDataError(f"{path} could not be read as klines: {type(exc).__name__}: {exc}") from None


def _vision_candidates(directory: Path, symbol: str, date: dt.date) -> list[Path]:
    """The file names Binance Vision uses, flat in the folder or in its own `<SYMBOL>/1m/` tree."""
    stem = f"{symbol}-1m-{date.isoformat()}"
    return [folder / f"{stem}{ext}" for folder in (directory, directory / symbol / "1m") for ext in (".zip", ".csv")]


def _names(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def _vision_day(path: Path, date: dt.date) -> pd.DataFrame:
    data = path.read_bytes()
    _verify_checksum(path, data)
    if path.suffix == ".zip":
        data = _unzip_single_csv(path, data)
    rows = _parse_vision_csv(path, data)
    return _check_day(path, rows, date)


def _verify_checksum(path: Path, data: bytes) -> None:
    checksum_path = path.with_name(path.name + ".CHECKSUM")
    if not checksum_path.is_file():
        return
    text = checksum_path.read_text(errors="replace").strip()
    match = _SHA256_RE.match(text)
    if not match:
        raise MarketDataError(f"{checksum_path} is not '<sha256>  <file name>': {text[:100]!r}")
    expected, named = match.group(1).lower(), match.group(2)
    if named is not None and named.strip() != path.name:
        raise MarketDataError(f"{checksum_path} is the checksum of {named.strip()!r}, not of {path.name!r}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise MarketDataError(
            f"{path} does not match its checksum file (sha256 {actual}, expected {expected}): "
            "the download is corrupt or incomplete; download it again"
        )


def _unzip_single_csv(path: Path, data: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [n for n in archive.namelist() if n.lower().endswith(".csv")]
            if len(members) != 1:
                raise MarketDataError(f"{path} should hold exactly one .csv file, holds {archive.namelist()}")
            return archive.read(members[0])
    except zipfile.BadZipFile as exc:
        raise MarketDataError(f"{path} is not a readable zip file: {exc}") from None


def _parse_vision_csv(path: Path, data: bytes) -> pd.DataFrame:
    """The 12-column kline rows as numbers; a header line, when present, is skipped."""
    try:
        raw = pd.read_csv(io.BytesIO(data), header=None, dtype=str)
    except pd.errors.EmptyDataError:
        raise MarketDataError(f"{path} is empty") from None
    if raw.shape[1] != BINANCE_VISION_COLUMNS:
        raise MarketDataError(
            f"{path} has {raw.shape[1]} columns; Binance Vision klines have {BINANCE_VISION_COLUMNS}"
        )
    first = raw.iloc[0, 0]
    if isinstance(first, str) and not first.strip().isdigit():  # an empty cell (NaN) is a bad row, not a header
        raw = raw.iloc[1:]  # a header line such as open_time,open,high,...
    numbers = raw.iloc[:, :6].apply(pd.to_numeric, errors="coerce")
    if numbers.empty:
        raise MarketDataError(f"{path} holds no kline rows")
    bad = numbers.index[numbers.isna().any(axis=1)]
    if len(bad):
        raise MarketDataError(f"{path} line {bad[0] + 1} is not a kline row: {','.join(raw.loc[bad[0]].fillna('').astype(str))}")
    return numbers


def _check_day(path: Path, numbers: pd.DataFrame, date: dt.date) -> pd.DataFrame:
    """Detect the open-time unit and make sure every bar belongs to the requested day."""
    open_times = numbers.iloc[:, 0].astype("int64").to_numpy()
    micro = open_times >= _MICROSECOND_THRESHOLD
    if micro.any() and not micro.all():
        raise MarketDataError(f"{path} mixes millisecond and microsecond open times")
    unit = "us" if micro.all() else "ms"
    values = {column: numbers.iloc[:, i + 1].to_numpy() for i, column in enumerate(OHLCV_COLUMNS[1:])}
    bars = normalize(pd.DataFrame({"timestamp": pd.to_datetime(open_times, unit=unit, utc=True), **values}))
    start = day_start(date)
    outside = (bars["timestamp"] < start) | (bars["timestamp"] >= start + pd.Timedelta(days=1))
    if outside.any():
        first = bars["timestamp"][outside].iloc[0]
        raise MarketDataError(
            f"{path} holds a bar at {first} (open time read as {unit}), outside {date}: "
            "wrong file for this date or an unexpected time unit"
        )
    return _whole_day(path, one_bar_per_minute(select_day(bars, date), str(path)), date, before=False, after=False)


def _json_day(path: Path, date: dt.date) -> pd.DataFrame:
    stat = path.stat()
    bars = _parsed_json(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    day = select_day(bars, date)
    if day.empty:
        covered = f"{bars['timestamp'].iloc[0]} .. {bars['timestamp'].iloc[-1]}" if len(bars) else "nothing"
        raise MarketDataError(f"{path} has no bars on {date}; it covers {covered}")
    start = day_start(date)
    before, after = bars["timestamp"].iloc[0] < start, bars["timestamp"].iloc[-1] >= start + pd.Timedelta(days=1)
    return _whole_day(path, one_bar_per_minute(day, str(path)), date, before, after)


def _whole_day(path: Path, day: pd.DataFrame, date: dt.date, before: bool, after: bool) -> pd.DataFrame:
    """`day`, unless it starts late with nothing `before` it in the file or ends early with nothing `after`."""
    first_minute = day_start(date)
    last_minute = first_minute + (BARS_PER_DAY - 1) * MINUTE
    first, last = day["timestamp"].iloc[0], day["timestamp"].iloc[-1]
    if first > first_minute and not before:
        missing = f"00:00..{first - MINUTE:%H:%M} ({int((first - first_minute) / MINUTE)} min)"
        raise MarketDataError(f"{path} starts late on {date}: its first bar is at {first:%H:%M}, {missing} missing, "
                              "and it holds nothing before the day; the day is not written")
    if last < last_minute and not after:
        missing = f"{last + MINUTE:%H:%M}..23:59 ({int((last_minute - last) / MINUTE)} min)"
        raise MarketDataError(f"{path} ends early on {date}: its last bar is at {last:%H:%M}, {missing} missing, "
                              "and it holds nothing after the day; the day is not written")
    return day


@lru_cache(maxsize=16)
def _parsed_json(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    """The whole dump as a contract frame; mtime and size are in the key so a rewritten file is re-read."""
    try:
        with open(path, "rb") as fh:
            rows = json.load(fh)
    except (OSError, ValueError) as exc:
        raise MarketDataError(f"{path} is not a readable JSON kline dump: {exc}") from None
    if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) < 6 for r in rows):
        raise MarketDataError(f"{path} must be a JSON array of [open_time_ms, open, high, low, close, volume] rows")
    return frame_from_rows(rows, unit="ms").sort_values("timestamp", kind="stable").reset_index(drop=True)
