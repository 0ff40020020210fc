"""The date x symbol partitions of every asset and the partition mappings between them."""
from __future__ import annotations

import datetime as dt
import warnings

import dagster as dg

from levibot_assets.settings import get_settings


def build_partitions(start_date: dt.date, symbols: tuple[str, ...]) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC"),
            "symbol": dg.StaticPartitionsDefinition(list(symbols)),
        }
    )


PARTITIONS = build_partitions(get_settings().start_date, get_settings().symbols)


def trailing_days_mapping(days: int) -> dg.MultiPartitionMapping:
    """The partition's own date and the `days - 1` dates before it, same symbol.

    Both dimensions are mapped: a dimension left out would map to ALL its partitions.
    """
    with warnings.catch_warnings():  # both classes are marked beta; their behaviour is what we rely on
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _trailing_days_mapping(days)


def _trailing_days_mapping(days: int) -> dg.MultiPartitionMapping:
    return dg.MultiPartitionMapping(
        {
            "date": dg.DimensionPartitionMapping(
                "date",
                dg.TimeWindowPartitionMapping(start_offset=-(days - 1), allow_nonexistent_upstream_partitions=True),
            ),
            "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
        }
    )


def warmup_mapping() -> dg.MultiPartitionMapping:
    """The same day and the previous one: indicators need yesterday's candles as warm-up."""
    return trailing_days_mapping(2)


def training_window_mapping(days: int) -> dg.MultiPartitionMapping:
    """The model's window: the test day (the partition's date) and the training days before it."""
    return trailing_days_mapping(days)


def parse_partition_key(key: str | dg.MultiPartitionKey) -> tuple[dt.date, str]:
    """`2025-10-13|BTCUSDT` -> (date(2025, 10, 13), "BTCUSDT")."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dt.date.fromisoformat(dims["date"]), dims["symbol"]
    date_part, _, symbol = str(key).partition("|")
    return dt.date.fromisoformat(date_part), symbol


def partition_date_symbol(context: dg.AssetExecutionContext) -> tuple[dt.date, str]:
    return parse_partition_key(context.partition_key)


def partition_key(date: dt.date | str, symbol: str) -> dg.MultiPartitionKey:
    date_str = date if isinstance(date, str) else date.isoformat()
    return dg.MultiPartitionKey({"date": date_str, "symbol": symbol})
