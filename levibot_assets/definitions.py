"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources, built from Settings.

`build_definitions(settings)` derives everything from one Settings value (partitions, code
versions, resources, the executor); `defs` builds it lazily when Dagster loads the code location
(`dagster dev`, `dagster asset materialize -m levibot_assets.definitions`), so importing any module
of the package reads no environment, and a test or tool builds the graph of its own Settings.
"""
from __future__ import annotations

import dagster as dg

from levibot_assets.assets.market import build_market_assets
from levibot_assets.assets.models import build_model_assets
from levibot_assets.assets.release import build_release_asset
from levibot_assets.instance.executors import build_executor
from levibot_assets.instance.reaper import dead_run_reaper
from levibot_assets.jobs import rollback_job
from levibot_assets.resources.alerts import WEBHOOK_ENV, AlertResource
from levibot_assets.resources.market_data import CCXT_OPTIONS_ENV, MarketDataResource
from levibot_assets.resources.pipeline import PipelineConfig
from levibot_assets.resources.storage import StorageResource
from levibot_assets.partitions import build_partitions
from levibot_assets.schedules import build_nightly_schedule, nightly_job
from levibot_assets.sensors import asset_check_alerts, run_failure_alerts
from levibot_assets.settings import Settings


def build_resources(settings: Settings) -> dict:
    """Resources wired from the settings."""
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


def build_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """raw_ohlcv, features, one model asset per asset-trained family, best_release (in dependency order),
    on the settings' partitions."""
    partitions = build_partitions(settings.start_date, settings.symbols)
    horizon = settings.label_horizon
    return [
        *build_market_assets(partitions, horizon),
        *build_model_assets(partitions, horizon),
        build_release_asset(partitions, horizon, settings.symbols),
    ]


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = build_partitions(settings.start_date, settings.symbols)
    return dg.Definitions(
        assets=build_assets(settings),
        jobs=[nightly_job, rollback_job],
        schedules=[build_nightly_schedule(partitions)],
        sensors=[asset_check_alerts, run_failure_alerts, dead_run_reaper],
        resources=build_resources(settings),
        executor=build_executor(settings.executor),  # LEVIBOT_EXECUTOR: where every job's steps run
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location's definitions, from the environment (LEVIBOT_*), built when Dagster loads it."""
    return build_definitions(Settings.from_env())
