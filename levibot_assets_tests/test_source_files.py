"""The files source: Binance Vision daily kline files written here, and the real shared freqtrade JSON."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from levibot_assets.core.ohlcv import BARS_PER_DAY, MarketDataError, day_start, find_gaps, zero_volume_streaks
from levibot_assets.core.sources import files
from levibot_assets.core.sources.files import files_day
from levibot_assets.core.symbols import SymbolError, dump_prefix

MS_DAY = dt.date(2024, 5, 1)  # Binance Vision open times are milliseconds before 2025 ...
US_DAY = dt.date(2025, 1, 2)  # ... and microseconds from 2025-01-01
HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"


def vision_rows(date: dt.date, unit: str, skip: range = range(0)) -> list[str]:
    """Binance Vision kline CSV lines for one day (12 columns, no header)."""
    scale = 1000 if unit == "us" else 1
    first_ms = int(day_start(date).timestamp() * 1000)
    lines = []
    for i in range(BARS_PER_DAY):
        if i in skip:
            continue
        open_time = (first_ms + i * 60_000) * scale
        close = 42_000 + (i * 7919 % 1000) / 100
        lines.append(
            f"{open_time},{close - 1:.8f},{close + 2:.8f},{close - 3:.8f},{close:.8f},{1 + i % 7 / 10:.8f},"
            f"{open_time + 60_000 * scale - 1},{close * 1.2:.8f},{100 + i},0.5,{close / 2:.8f},0"
        )
    return lines


def write_vision(directory: Path, symbol: str, date: dt.date, lines: list[str], kind: str = "zip",
                 checksum: str | None = "good") -> Path:
    stem = f"{symbol}-1m-{date.isoformat()}"
    csv_text = "\n".join(lines) + "\n"
    path = directory / f"{stem}.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{stem}.csv", csv_text)
    else:
        path.write_text(csv_text)
    if checksum is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if checksum == "good" else checksum
        Path(f"{path}.CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def closes(lines: list[str]) -> list[float]:
    return [float(line.split(",")[4]) for line in lines]


@pytest.mark.parametrize("date, unit", [(MS_DAY, "ms"), (US_DAY, "us")])
@pytest.mark.parametrize("kind", ["zip", "csv"])
@pytest.mark.parametrize("checksum", ["good", None])
def test_binance_vision_daily_files_in_milliseconds_and_microseconds(tmp_path, date, unit, kind, checksum):
    lines = vision_rows(date, unit)
    write_vision(tmp_path, "BTCUSDT", date, lines, kind, checksum)

    bars = files_day(tmp_path, "BTCUSDT", date)

    assert len(bars) == BARS_PER_DAY and find_gaps(bars, date) == []
    assert bars["timestamp"].iloc[0] == day_start(date)
    assert bars["timestamp"].iloc[-1] == day_start(date) + pd.Timedelta(minutes=BARS_PER_DAY - 1)
    assert bars["close"].tolist() == closes(lines)


def test_a_header_line_is_tolerated_and_gaps_are_kept(tmp_path):
    lines = vision_rows(US_DAY, "us", skip=range(600, 660))
    write_vision(tmp_path, "ETHUSDT", US_DAY, [HEADER, *lines], kind="csv")

    bars = files_day(tmp_path, "ETHUSDT", US_DAY)

    assert len(bars) == BARS_PER_DAY - 60 and bars["close"].tolist() == closes(lines)
    assert [str(g) for g in find_gaps(bars, US_DAY)] == ["2025-01-02 10:00..10:59 (60 min)"]


def test_binance_vision_tree_layout_is_found(tmp_path):
    folder = tmp_path / "BTCUSDT" / "1m"
    folder.mkdir(parents=True)
    write_vision(folder, "BTCUSDT", MS_DAY, vision_rows(MS_DAY, "ms"))
    assert len(files_day(tmp_path, "BTCUSDT", MS_DAY)) == BARS_PER_DAY


def test_a_bad_checksum_is_refused(tmp_path):
    write_vision(tmp_path, "BTCUSDT", US_DAY, vision_rows(US_DAY, "us"), checksum="0" * 64)
    with pytest.raises(MarketDataError, match="does not match its checksum file"):
        files_day(tmp_path, "BTCUSDT", US_DAY)


def test_a_checksum_of_another_file_or_a_malformed_one_is_refused(tmp_path):
    path = write_vision(tmp_path, "BTCUSDT", MS_DAY, vision_rows(MS_DAY, "ms"))
    checksum = Path(f"{path}.CHECKSUM")
    checksum.write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  BTCUSDT-1m-2024-04-30.zip\n")
    with pytest.raises(MarketDataError, match="not of 'BTCUSDT-1m-2024-05-01.zip'"):
        files_day(tmp_path, "BTCUSDT", MS_DAY)
    checksum.write_text("<html>404 Not Found</html>")
    with pytest.raises(MarketDataError, match="is not '<sha256>  <file name>'"):
        files_day(tmp_path, "BTCUSDT", MS_DAY)


def test_a_file_holding_another_day_is_refused(tmp_path):
    other_day = vision_rows(MS_DAY - dt.timedelta(days=1), "ms")
    write_vision(tmp_path, "BTCUSDT", MS_DAY, other_day)
    with pytest.raises(MarketDataError, match="outside 2024-05-01"):
        files_day(tmp_path, "BTCUSDT", MS_DAY)


def test_malformed_vision_files_are_clear_errors(tmp_path):
    write_vision(tmp_path, "BTCUSDT", MS_DAY, [line.rsplit(",", 1)[0] for line in vision_rows(MS_DAY, "ms")], "csv")
    with pytest.raises(MarketDataError, match="has 11 columns"):
        files_day(tmp_path, "BTCUSDT", MS_DAY)
    (tmp_path / "BTCUSDT-1m-2024-05-01.csv").unlink()
    (tmp_path / "BTCUSDT-1m-2024-05-01.zip").write_bytes(b"PK not really a zip")
    with pytest.raises(MarketDataError, match="not a readable zip file"):
        files_day(tmp_path, "BTCUSDT", MS_DAY)


@pytest.mark.parametrize(
    "name, content, cause",
    [
        ("BTCUSDT-1m-2024-05-01.csv", "\n".join(vision_rows(MS_DAY, "ms")[:3] + [vision_rows(MS_DAY, "ms")[3] + ",9"]),
         "ParserError"),  # a ragged line
        ("BTCUSDT-1m-2024-05-01.csv", b"\xff\xfe\x00 not text", "UnicodeDecodeError"),
        ("BTCUSDT-1m-2024-05-01.csv", "," + vision_rows(MS_DAY, "ms")[0].split(",", 1)[1], "is not a kline row"),
        ("BTC_USDT-1m.json", json.dumps([[1714521600000, "x", 1, 1, 1, 1]]), "ValueError"),
        ("BTC_USDT-1m.json", json.dumps([[None, 1, 1, 1, 1, 1]]), "TypeError"),
    ],
)
def test_unparsable_files_are_named_in_the_error(tmp_path, name, content, cause):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MarketDataError, match=cause) as error:
        files_day(tmp_path, "BTCUSDT", MS_DAY)
    assert str(path) in str(error.value)


def test_the_vision_file_is_preferred_over_a_json_dump(tmp_path):
    lines = vision_rows(MS_DAY, "ms")
    write_vision(tmp_path, "BTCUSDT", MS_DAY, lines)
    first_ms = int(day_start(MS_DAY).timestamp() * 1000)
    dump = [[first_ms + i * 60_000, 1.0, 1.0, 1.0, 1.0, 1.0] for i in range(BARS_PER_DAY)]
    (tmp_path / "BTC_USDT-1m.json").write_text(json.dumps(dump))

    assert files_day(tmp_path, "BTCUSDT", MS_DAY)["close"].tolist() == closes(lines)


def test_real_json_dump_returns_the_days_bars_unchanged(shared_data_dir):
    day = dt.date(2023, 4, 10)
    start_ms = int(day_start(day).timestamp() * 1000)
    raw = json.loads((shared_data_dir / "BTC_USDT-1m.json").read_text())
    expected = [row for row in raw if start_ms <= row[0] < start_ms + 86_400_000]

    bars = files_day(shared_data_dir, "BTCUSDT", day)

    assert len(bars) == BARS_PER_DAY == len(expected)
    assert bars["close"].tolist() == [float(row[4]) for row in expected]
    assert bars["volume"].tolist() == [float(row[5]) for row in expected]


def test_real_halt_day_keeps_its_gap_and_zero_volume_bars(shared_data_dir):
    day = dt.date(2023, 3, 24)
    bars = files_day(shared_data_dir, "BTCUSDT", day)

    assert len(bars) == BARS_PER_DAY - 80
    assert [str(g) for g in find_gaps(bars, day)] == ["2023-03-24 12:40..13:59 (80 min)"]
    assert [str(s) for s in zero_volume_streaks(bars)] == ["2023-03-24 11:28..12:39 (72 min)"]


def test_json_dump_is_parsed_once_and_reread_when_it_changes(tmp_path):
    first_ms = int(day_start(MS_DAY).timestamp() * 1000)
    path = tmp_path / "SOL_USDT-1m.json"
    path.write_text(json.dumps([[first_ms + i * 60_000, 1, 2, 0.5, 1.5, 3] for i in range(2 * BARS_PER_DAY)]))
    files._parsed_json.cache_clear()

    assert len(files_day(tmp_path, "SOLUSDT", MS_DAY)) == BARS_PER_DAY
    assert len(files_day(tmp_path, "SOLUSDT", MS_DAY + dt.timedelta(days=1))) == BARS_PER_DAY
    assert files._parsed_json.cache_info().misses == 1

    path.write_text(json.dumps([[first_ms + i * 60_000, 1, 2, 0.5, 7.25, 3] for i in range(BARS_PER_DAY)]))
    bars = files_day(tmp_path, "SOLUSDT", MS_DAY)
    assert len(bars) == BARS_PER_DAY and set(bars["close"]) == {7.25}


def test_missing_files_and_uncovered_days_name_what_was_looked_for(tmp_path, shared_data_dir):
    with pytest.raises(MarketDataError, match=r"BTCUSDT-1m-2024-05-01\.zip.*BTC_USDT-1m\.json"):
        files_day(tmp_path, "BTCUSDT", MS_DAY)
    with pytest.raises(MarketDataError, match=r"has no bars on 2023-06-01; it covers 2023-03-16 22:15"):
        files_day(shared_data_dir, "BTCUSDT", dt.date(2023, 6, 1))
    with pytest.raises(MarketDataError, match="is not a directory"):
        files_day(tmp_path / "nowhere", "BTCUSDT", MS_DAY)


def test_dump_prefix_follows_freqtrade_names():
    assert dump_prefix("BTCUSDT") == "BTC_USDT"
    assert dump_prefix("ETHBTC") == "ETH_BTC"
    assert dump_prefix("SOLFDUSD") == "SOL_FDUSD"
    with pytest.raises(SymbolError, match="cannot split symbol 'XYZ'"):
        dump_prefix("XYZ")


# --- a day is complete or it fails ---------------------------------------------------------------


def dump_rows(first: dt.datetime, count: int, skip: range = range(0)) -> list[list]:
    first_ms = int(first.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    return [[first_ms + i * 60_000, 100.0 + i % 7, 103.0 + i % 7, 98.0 + i % 7, 101.0 + i % 7, 2.0]
            for i in range(count) if i not in skip]


def test_a_dump_that_ends_mid_day_is_refused_naming_the_missing_minutes(tmp_path):
    start = dt.datetime(2024, 4, 30)
    (tmp_path / "BTC_USDT-1m.json").write_text(json.dumps(dump_rows(start, BARS_PER_DAY + 1226)))  # stops at 20:25

    assert len(files_day(tmp_path, "BTCUSDT", MS_DAY - dt.timedelta(days=1))) == BARS_PER_DAY
    with pytest.raises(MarketDataError, match=r"ends early on 2024-05-01: its last bar is at 20:25, 20:26\.\.23:59 "
                                              r"\(214 min\) missing, and it holds nothing after the day"):
        files_day(tmp_path, "BTCUSDT", MS_DAY)


def test_a_dump_that_starts_late_is_refused_but_a_hole_with_bars_on_both_sides_is_kept(tmp_path):
    # bars from 2024-05-01 06:00 to 2024-05-03 00:00, with nothing 2024-05-01 23:30 .. 05-02 00:29 (a halt)
    rows = dump_rows(dt.datetime(2024, 5, 1, 6, 0), 2 * BARS_PER_DAY - 360 + 1, skip=range(1050, 1110))
    (tmp_path / "BTC_USDT-1m.json").write_text(json.dumps(rows))

    with pytest.raises(MarketDataError, match=r"starts late on 2024-05-01: its first bar is at 06:00, 00:00\.\.05:59 "
                                              r"\(360 min\) missing, and it holds nothing before the day"):
        files_day(tmp_path, "BTCUSDT", MS_DAY)
    bars = files_day(tmp_path, "BTCUSDT", MS_DAY + dt.timedelta(days=1))
    assert [str(g) for g in find_gaps(bars, MS_DAY + dt.timedelta(days=1))] == ["2024-05-02 00:00..00:29 (30 min)"]


def test_the_shared_dumps_partial_first_and_last_days_are_refused(shared_data_dir):
    with pytest.raises(MarketDataError, match="starts late on 2023-03-16: its first bar is at 22:15"):
        files_day(shared_data_dir, "BTCUSDT", dt.date(2023, 3, 16))
    with pytest.raises(MarketDataError, match="ends early on 2023-05-01: its last bar is at 21:02"):
        files_day(shared_data_dir, "SOLUSDT", dt.date(2023, 5, 1))
    assert len(files_day(shared_data_dir, "ETHUSDT", dt.date(2023, 3, 24))) == BARS_PER_DAY - 80  # the halt is kept


def test_a_vision_file_that_ends_mid_day_is_refused(tmp_path):
    write_vision(tmp_path, "BTCUSDT", US_DAY, vision_rows(US_DAY, "us", skip=range(1226, BARS_PER_DAY)))
    with pytest.raises(MarketDataError, match=r"ends early on 2025-01-02: its last bar is at 20:25"):
        files_day(tmp_path, "BTCUSDT", US_DAY)


def test_a_minute_held_twice_with_different_values_is_refused_naming_both_rows(tmp_path):
    rows = dump_rows(dt.datetime(2024, 5, 1), BARS_PER_DAY)
    spike = [rows[700][0], 100.0, 101000.0, 98.0, 100000.0, 2.0]
    (tmp_path / "BTC_USDT-1m.json").write_text(json.dumps(rows + [list(rows[5]), spike]))  # a repeat, a conflict

    with pytest.raises(MarketDataError) as info:
        files_day(tmp_path, "BTCUSDT", MS_DAY)
    assert "1 minute(s) with conflicting rows, the first 2024-05-01 11:40: [100, 103, 98, 101, 2] and " \
           "[100, 101000, 98, 100000, 2]" in str(info.value)

    (tmp_path / "BTC_USDT-1m.json").write_text(json.dumps(rows + [list(rows[5])]))  # an exact repeat is harmless
    assert len(files_day(tmp_path, "BTCUSDT", MS_DAY)) == BARS_PER_DAY


def test_a_vision_file_with_a_conflicting_minute_is_refused(tmp_path):
    lines = vision_rows(MS_DAY, "ms")
    changed = lines[100].split(",")
    changed[4] = "1.0"
    write_vision(tmp_path, "BTCUSDT", MS_DAY, lines + [",".join(changed)], kind="csv")
    with pytest.raises(MarketDataError, match="1 minute.s. with conflicting rows, the first 2024-05-01 01:40"):
        files_day(tmp_path, "BTCUSDT", MS_DAY)
