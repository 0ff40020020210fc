"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources."""
from __future__ import annotations

import dagster as dg

from levibot_assets.assets.market import features, raw_ohlcv
from levibot_assets.assets.models import lgbm_model, tft_model
from levibot_assets.assets.release import best_release
from levibot_assets.instance.executors import build_executor
from levibot_assets.instance.reaper import dead_run_reaper
from levibot_assets.jobs import rollback_job
from levibot_assets.resources.alerts import WEBHOOK_ENV, AlertResource
from levibot_assets.resources.market_data import CCXT_OPTIONS_ENV, MarketDataResource
from levibot_assets.resources.pipeline import PipelineConfig
from levibot_assets.resources.storage import StorageResource
from levibot_assets.schedules import nightly_job, nightly_schedule
from levibot_assets.sensors import asset_check_alerts, run_failure_alerts
from levibot_assets.settings import get_settings


def build_resources(settings=None) -> dict:
    """Resources wired from the settings; tests call this with their own Settings."""
    settings = settings or get_settings()
    storage = StorageResource(data_dir=settings.data_dir)
    return {
        "storage": storage,
        "market_data": MarketDataResource(
            source=settings.source,
            exchange=settings.exchange,
            files_dir=settings.files_dir,
            # may hold proxy credentials: the variable goes into the run snapshot, not its value
            ccxt_options=dg.EnvVar(CCXT_OPTIONS_ENV) if settings.ccxt_options else None,
        ),
        "pipeline": PipelineConfig.from_settings(settings),
        # The variable, not its value: run snapshots keep resource config, and the URL holds a token.
        # Only when set, because an EnvVar of an unset variable fails resource initialization.
        "alerts": AlertResource(storage=storage, webhook_url=dg.EnvVar(WEBHOOK_ENV) if settings.alert_webhook else None),
    }


ASSETS = [raw_ohlcv, features, lgbm_model, tft_model, best_release]

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[nightly_job, rollback_job],
    schedules=[nightly_schedule],
    sensors=[asset_check_alerts, run_failure_alerts, dead_run_reaper],
    resources=build_resources(),
    executor=build_executor(),  # LEVIBOT_EXECUTOR: where every job's steps run (instance/executors.py)
)
