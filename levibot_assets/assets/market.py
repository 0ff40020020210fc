"""raw_ohlcv and features: one UTC day of candles per symbol, and the per-bar features + label.

Both take any set of (date, symbol) partitions in one run (core of a backfill) and handle them one
at a time through assets.partition_runs: fetch or compute, check, and only then write.

features reads the day before as indicator warm-up when it is on disk, but declares only the same
day as its upstream partition: a backfill of dates D1..D2 then targets exactly D1..D2 (a declared
previous-day mapping would pull in D2+1, whose candles nobody asked for).

No `from __future__ import annotations` here: Dagster inspects the context type hint at runtime.
"""

import datetime as dt

import dagster as dg
import pandas as pd

from levibot_assets.assets.partition_runs import PartitionResult, materialize_partitions, partitioned_asset
from levibot_assets.checks import features_check_results, features_checks, raw_ohlcv_check_results, raw_ohlcv_checks
from levibot_assets.core.features import FEATURE_SET_VERSION, LABEL_COLUMN, compute_features, contract_version, training_rows
from levibot_assets.core.tables import read_table, write_table
from levibot_assets.resources.market_data import MarketDataResource
from levibot_assets.resources.pipeline import PipelineConfig
from levibot_assets.resources.storage import StorageResource

MAX_GAPS_SHOWN = 20
PREVIEW_ROWS = 5


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


def _markdown_table(frame: pd.DataFrame) -> str:
    """`frame.to_markdown(index=False)` as the UI renders it (same cells: numbers formatted "g" and right-aligned,
    the rest as str, left-aligned) without the column padding, which rendered Markdown drops: to_markdown
    (tabulate) infers each cell's type, 1 ms a partition of a range run."""
    numeric = [dtype.kind in "iuf" for dtype in frame.dtypes]

    def row(values) -> str:
        return "| " + " | ".join(format(v, "g") if n and isinstance(v, float) else str(v) for v, n in zip(values, numeric)) + " |"

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"
    return "\n".join([header, rule, *map(row, frame.to_numpy(dtype=object).tolist())])


def _table_metadata(frame: pd.DataFrame) -> dict:
    """Row count, time range and the first rows: what a person checks first in the UI."""
    meta = {
        "rows": dg.MetadataValue.int(len(frame)),
        "preview": dg.MetadataValue.md(_markdown_table(frame.head(PREVIEW_ROWS)) if len(frame) else "(empty)"),
    }
    if len(frame):
        meta["first_timestamp"] = dg.MetadataValue.text(str(frame["timestamp"].iloc[0]))
        meta["last_timestamp"] = dg.MetadataValue.text(str(frame["timestamp"].iloc[-1]))
    return meta


def _store(storage: StorageResource, asset: str, date: dt.date, symbol: str, frame: pd.DataFrame):
    def store() -> dict:
        path = write_table(storage.layout, asset, date, symbol, frame)
        return {"path": dg.MetadataValue.path(str(path)), "bytes": dg.MetadataValue.int(path.stat().st_size)}

    return store


def build_market_assets(partitions: dg.MultiPartitionsDefinition, horizon: int) -> list[dg.AssetsDefinition]:
    """raw_ohlcv and features on `partitions`; features' code_version follows the label horizon."""

    @partitioned_asset(
        partitions, pool="exchange", group_name="market_data", kinds={"pandas", "parquet"},
        check_specs=raw_ohlcv_checks(partitions), code_version="1",
    )
    def raw_ohlcv(context: dg.AssetExecutionContext, market_data: MarketDataResource, storage: StorageResource):
        """The partition's UTC day of 1-minute candles, as the source delivered them (gaps stay gaps)."""

        def compute(date: dt.date, symbol: str) -> PartitionResult:
            bars = market_data.fetch_day(symbol, date)
            checks = {result.check_name: result for result in raw_ohlcv_check_results(bars, date)}
            metadata = {
                "source": dg.MetadataValue.text(market_data.describe()),
                "bar_count": dg.MetadataValue.int(len(bars)),
                "last_close": dg.MetadataValue.float(float(bars["close"].iloc[-1]) if len(bars) else float("nan")),
                **_table_metadata(bars),
                **_gap_metadata(checks),
            }
            return PartitionResult(list(checks.values()), _store(storage, "raw_ohlcv", date, symbol, bars), metadata)

        yield from materialize_partitions(context, compute)


    @partitioned_asset(
        partitions,
        deps=[raw_ohlcv],
        group_name="features",
        kinds={"pandas", "parquet"},
        check_specs=features_checks(partitions),
        code_version=contract_version(horizon),
    )
    def features(context: dg.AssetExecutionContext, storage: StorageResource, pipeline: PipelineConfig):
        """Per-bar features and the H-bar direction label; the previous day's candles are the warm-up."""
        horizon = pipeline.label_horizon
        layout = storage.layout

        def compute(date: dt.date, symbol: str) -> PartitionResult:
            bars = read_table(layout, "raw_ohlcv", date, symbol)
            previous = date - dt.timedelta(days=1)
            warmup_present = layout.table("raw_ohlcv", previous, symbol).exists()
            if warmup_present:
                bars = pd.concat([read_table(layout, "raw_ohlcv", previous, symbol), bars], ignore_index=True)
            else:
                context.log.warning(f"no raw_ohlcv for {previous}|{symbol}: indicators start cold (NaN warm-up rows)")
            frame = compute_features(bars, date, horizon)
            usable = training_rows(frame)
            metadata = {
                "label_horizon_bars": dg.MetadataValue.int(horizon),
                "feature_set": dg.MetadataValue.int(FEATURE_SET_VERSION),
                "usable_rows": dg.MetadataValue.int(len(usable)),
                "label_up_share": dg.MetadataValue.float(float(usable[LABEL_COLUMN].mean()) if len(usable) else float("nan")),
                "warmup_day_present": dg.MetadataValue.bool(warmup_present),
                **_table_metadata(frame),
            }
            return PartitionResult(features_check_results(frame), _store(storage, "features", date, symbol, frame), metadata)

        yield from materialize_partitions(context, compute)

    return [raw_ohlcv, features]
