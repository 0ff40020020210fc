"""IO managers: dated parquet tables and model directories, written atomically.

An input declared with `WINDOW_INPUT` metadata (a trailing-days mapping) is loaded as
{"YYYY-MM-DD": DataFrame} with the days that were never materialized left out; the asset decides
whether what is there is enough. A plain input must exist, or the error says what to materialize.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from levibot_assets.core.atomic import atomic_write_parquet, atomic_write_text
from levibot_assets.core.model_api import TrainedModel, model_class
from levibot_assets.partitions import parse_partition_key
from levibot_assets.resources.storage import StorageResource

WINDOW_INPUT = {"levibot/window": True}
PREVIEW_ROWS = 5


def _is_window(context: dg.InputContext) -> bool:
    return bool((context.definition_metadata or {}).get("levibot/window"))


def _missing(asset: str, key: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{asset} partition {key} has not been materialized (no file): materialize {asset} for {key} first"
    )


class ParquetIOManager(dg.ConfigurableIOManager):
    """raw_ohlcv/<date>/<SYMBOL>.parquet and features/<date>/<SYMBOL>.parquet."""

    storage: StorageResource

    def _path(self, asset: str, key: str) -> Path:
        date, symbol = parse_partition_key(key)
        return self.storage.layout.table(asset, date, symbol)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        asset = context.asset_key.path[-1]
        path = self._path(asset, context.partition_key)
        atomic_write_parquet(path, obj)
        preview = obj.head(PREVIEW_ROWS).to_markdown(index=False) if len(obj) else "(empty)"
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "rows": dg.MetadataValue.int(len(obj)),
                "bytes": dg.MetadataValue.int(path.stat().st_size),
                "preview": dg.MetadataValue.md(preview),
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        asset = context.asset_key.path[-1]
        keys = list(context.asset_partition_keys)
        if _is_window(context):
            frames = {}
            for key in keys:
                path = self._path(asset, key)
                if path.exists():
                    frames[parse_partition_key(key)[0].isoformat()] = pd.read_parquet(path)
            return dict(sorted(frames.items()))
        (key,) = keys
        path = self._path(asset, key)
        if not path.exists():
            raise _missing(asset, key)
        return pd.read_parquet(path)


def model_type_of(asset_name: str) -> str:
    """lgbm_model -> lgbm, tft_model -> tft."""
    return asset_name.removesuffix("_model")


class ModelIOManager(dg.ConfigurableIOManager):
    """models/<date>/<SYMBOL>/<model file> + <model_type>_metrics.json."""

    storage: StorageResource

    def handle_output(self, context: dg.OutputContext, obj: TrainedModel) -> None:
        date, symbol = parse_partition_key(context.partition_key)
        directory = self.storage.layout.model_dir(date, symbol)
        files = obj.model.save(directory)
        metrics_path = directory / f"{obj.model_type}_metrics.json"
        atomic_write_text(metrics_path, json.dumps(obj.metrics, indent=2, sort_keys=True, default=str))
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(directory)),
                "files": dg.MetadataValue.json([Path(f).name for f in files] + [metrics_path.name]),
            }
        )

    def load_input(self, context: dg.InputContext) -> TrainedModel:
        model_type = model_type_of(context.asset_key.path[-1])
        (key,) = list(context.asset_partition_keys)
        date, symbol = parse_partition_key(key)
        directory = self.storage.layout.model_dir(date, symbol)
        metrics_path = directory / f"{model_type}_metrics.json"
        if not metrics_path.exists():
            raise _missing(f"{model_type}_model", key)
        model = model_class(model_type).load(directory)
        return TrainedModel(model=model, metrics=json.loads(metrics_path.read_text()))
