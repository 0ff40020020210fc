"""The date x symbol partitions of every asset, their keys and the run tags of a partition range
and of a symbol's runs.

Every asset depends on the same partition of its upstream assets; the trailing windows a model
reads are looked up on disk (core.tables), so a backfill targets exactly the partitions asked for.
The partitions themselves are built from the settings by definitions.build_definitions.
"""
from __future__ import annotations

import datetime as dt

import dagster as dg

from levibot_assets.core.layout import date_str


def build_partitions(start_date: dt.date, symbols: tuple[str, ...]) -> dg.MultiPartitionsDefinition:
    """Daily UTC dates from `start_date` x the symbols (LEVIBOT_START_DATE, LEVIBOT_SYMBOLS)."""
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC"),
            "symbol": dg.StaticPartitionsDefinition(list(symbols)),
        }
    )


def parse_partition_key(key: str | dg.MultiPartitionKey) -> tuple[dt.date, str]:
    """`2025-10-13|BTCUSDT` -> (date(2025, 10, 13), "BTCUSDT")."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dt.date.fromisoformat(dims["date"]), dims["symbol"]
    date_part, _, symbol = str(key).partition("|")
    return dt.date.fromisoformat(date_part), symbol


RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
# Every run of one symbol carries it; both dagster.yaml files (and the Helm values) limit it to one
# run at a time per value, so a symbol's runs execute in the order requested (test_compose_config).
SYMBOL_TAG = "levibot/symbol"


def range_tags(start: dt.date, end: dt.date, symbol: str) -> dict[str, str]:
    """Run tags for the dates start..end of one symbol, as `dagster asset materialize --partition-range` sets them."""
    return {RANGE_START_TAG: str(partition_key(start, symbol)), RANGE_END_TAG: str(partition_key(end, symbol))}


def partition_key(date: dt.date | str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": date_str(date), "symbol": symbol})
