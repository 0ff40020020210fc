"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources."""
from __future__ import annotations

import dagster as dg

from levibot_assets.assets.market import features, raw_ohlcv
from levibot_assets.resources.io_managers import ModelIOManager, ParquetIOManager
from levibot_assets.resources.market_data import MarketDataResource
from levibot_assets.resources.storage import StorageResource
from levibot_assets.settings import get_settings


def build_resources(settings=None) -> dict:
    """Resources wired from the settings; tests call this with their own Settings."""
    settings = settings or get_settings()
    storage = StorageResource(data_dir=settings.data_dir)
    return {
        "storage": storage,
        "market_data": MarketDataResource(
            source=settings.source, exchange=settings.exchange, files_dir=settings.files_dir
        ),
        "parquet_io_manager": ParquetIOManager(storage=storage),
        "model_io_manager": ModelIOManager(storage=storage),
    }


ASSETS = [raw_ohlcv, features]

defs = dg.Definitions(
    assets=ASSETS,
    resources=build_resources(),
)
