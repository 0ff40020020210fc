"""raw_ohlcv and features: one UTC day of candles per symbol, and the per-bar features + label.

No `from __future__ import annotations` here: Dagster inspects the context type hint at runtime.
"""

import dagster as dg
import pandas as pd

from levibot_assets.checks import FEATURES_CHECKS, RAW_OHLCV_CHECKS, features_check_results, raw_ohlcv_check_results
from levibot_assets.core.features import LABEL_COLUMN, compute_features, training_rows
from levibot_assets.partitions import PARTITIONS, partition_date_symbol, warmup_mapping
from levibot_assets.resources.io_managers import WINDOW_INPUT
from levibot_assets.resources.market_data import MarketDataResource
from levibot_assets.settings import get_settings

MAX_GAPS_SHOWN = 20


def _gap_metadata(checks: dict[str, dg.AssetCheckResult]) -> dict:
    """Gaps and halts as plottable numbers, taken from the checks that measured them."""
    completeness, halts = checks["complete_day"].metadata, checks["no_trading_halt"].metadata
    gap_times = completeness["gap_times"].value
    listed = "\n".join(f"- {g}" for g in gap_times[:MAX_GAPS_SHOWN]) or "none"
    if len(gap_times) > MAX_GAPS_SHOWN:
        listed += f"\n- ... {len(gap_times) - MAX_GAPS_SHOWN} more"
    return {
        "missing_minutes": completeness["missing_minutes"],
        "gaps": completeness["gaps"],
        "gap_list": dg.MetadataValue.md(listed),
        "zero_volume_streaks": halts["zero_volume_streaks"],
    }


def _time_range(frame: pd.DataFrame) -> dict:
    if frame.empty:
        return {}
    return {
        "first_timestamp": dg.MetadataValue.text(str(frame["timestamp"].iloc[0])),
        "last_timestamp": dg.MetadataValue.text(str(frame["timestamp"].iloc[-1])),
    }


@dg.asset(
    partitions_def=PARTITIONS,
    io_manager_key="parquet_io_manager",
    pool="exchange",
    group_name="market_data",
    kinds={"pandas", "parquet"},
    check_specs=RAW_OHLCV_CHECKS,
)
def raw_ohlcv(context: dg.AssetExecutionContext, market_data: MarketDataResource):
    """The partition's UTC day of 1-minute candles, as the source delivered them (gaps stay gaps)."""
    date, symbol = partition_date_symbol(context)
    bars = market_data.fetch_day(symbol, date)
    context.log.info(f"{symbol} {date}: {len(bars)} bars from {market_data.describe()}")
    checks = {result.check_name: result for result in raw_ohlcv_check_results(bars, date)}
    yield dg.Output(
        bars,
        metadata={
            "source": dg.MetadataValue.text(market_data.describe()),
            "bar_count": dg.MetadataValue.int(len(bars)),
            "last_close": dg.MetadataValue.float(float(bars["close"].iloc[-1]) if len(bars) else float("nan")),
            **_time_range(bars),
            **_gap_metadata(checks),
        },
    )
    yield from checks.values()


@dg.asset(
    partitions_def=PARTITIONS,
    io_manager_key="parquet_io_manager",
    ins={"raw_ohlcv": dg.AssetIn(partition_mapping=warmup_mapping(), metadata=WINDOW_INPUT)},
    group_name="features",
    kinds={"pandas", "parquet"},
    check_specs=FEATURES_CHECKS,
)
def features(context: dg.AssetExecutionContext, raw_ohlcv: dict[str, pd.DataFrame]):
    """Per-bar features and the H-bar direction label; the previous day's candles are the warm-up."""
    date, symbol = partition_date_symbol(context)
    horizon = get_settings().label_horizon
    if date.isoformat() not in raw_ohlcv:
        raise FileNotFoundError(f"raw_ohlcv {date}|{symbol} has not been materialized: materialize it first")
    warmup_present = len(raw_ohlcv) > 1
    if not warmup_present:
        context.log.warning(f"no raw_ohlcv for the day before {date}: indicators start cold (NaN warm-up rows)")
    frame = compute_features(pd.concat(raw_ohlcv.values(), ignore_index=True), date, horizon)
    usable = training_rows(frame)
    yield dg.Output(
        frame,
        metadata={
            "label_horizon_bars": dg.MetadataValue.int(horizon),
            "usable_rows": dg.MetadataValue.int(len(usable)),
            "label_up_share": dg.MetadataValue.float(float(usable[LABEL_COLUMN].mean()) if len(usable) else float("nan")),
            "warmup_day_present": dg.MetadataValue.bool(warmup_present),
            **_time_range(frame),
        },
    )
    yield from features_check_results(frame)
