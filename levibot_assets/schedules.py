"""The nightly schedule: at 03:00 UTC, the whole graph for yesterday, one run per symbol.

A model trains on the trailing `train_days` days of features. On a fresh install (or after an
outage) some of those days were never materialized, so before each symbol's nightly run the
schedule first requests ONE range run of raw_ohlcv+features over the missing window days (the
same partition-range run a backfill launches). The runs of a symbol carry the tag
`levibot/symbol`; dagster.yaml limits that tag to one run at a time per value, so a symbol's runs
execute in the order requested and the model run finds its window complete. When nothing is
missing this is exactly one run per symbol for yesterday.
"""
from __future__ import annotations

import datetime as dt

import dagster as dg

from levibot_assets.partitions import SYMBOL_TAG, partition_key, range_tags
from levibot_assets.resources.pipeline import PipelineConfig

RAW, FEATURES = dg.AssetKey("raw_ohlcv"), dg.AssetKey("features")

nightly_job = dg.define_asset_job(
    "nightly",
    selection=dg.AssetSelection.all(),
    description="raw_ohlcv -> features -> models -> best_release for one (date, symbol).",
)


def window_days(date: dt.date, train_days: int, start_date: dt.date) -> list[dt.date]:
    """The training days before `date` that partitions exist for, oldest first."""
    days = [date - dt.timedelta(days=k) for k in range(train_days - 1, 0, -1)]
    return [d for d in days if d >= start_date]


def nightly_requests(
    partitions: dg.MultiPartitionsDefinition, date: dt.date, train_days: int, materialized: dict[dg.AssetKey, set[str]]
) -> list[dg.RunRequest]:
    """Per symbol: one range run filling the window days that lack features, then the full-graph run.

    `materialized` holds the materialized partition keys of raw_ohlcv and features.
    """
    start_date = partitions.get_partitions_def_for_dimension("date").start.date()
    requests = []
    for symbol in partitions.get_partitions_def_for_dimension("symbol").get_partition_keys():
        days = window_days(date, train_days, start_date)
        missing = [d for d in days if str(partition_key(d, symbol)) not in materialized.get(FEATURES, set())]
        if missing:
            first, last = missing[0], missing[-1]
            span = [d for d in days if first <= d <= last]
            have_raw = all(str(partition_key(d, symbol)) in materialized.get(RAW, set()) for d in span)
            requests.append(
                dg.RunRequest(
                    run_key=f"{date}:window:{symbol}:{first}..{last}",
                    asset_selection=[FEATURES] if have_raw else [RAW, FEATURES],
                    tags={**range_tags(first, last, symbol), SYMBOL_TAG: symbol, "levibot/purpose": "training-window"},
                )
            )
        key = partition_key(date, symbol)
        requests.append(dg.RunRequest(run_key=f"{date}:nightly:{key}", partition_key=key, tags={SYMBOL_TAG: symbol}))
    return requests


def build_nightly_schedule(partitions: dg.MultiPartitionsDefinition) -> dg.ScheduleDefinition:
    """The 03:00 UTC schedule over `partitions` (its dates and symbols)."""

    @dg.schedule(
        job=nightly_job,
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="03:00 UTC: yesterday's partition of every symbol, after any missing training-window days.",
    )
    def nightly_schedule(context: dg.ScheduleEvaluationContext, pipeline: PipelineConfig):
        date = context.scheduled_execution_time.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)
        if date.isoformat() not in partitions.get_partitions_def_for_dimension("date").get_partition_keys(
            current_time=context.scheduled_execution_time
        ):
            return dg.SkipReason(f"{date} is not a date partition (before LEVIBOT_START_DATE?)")
        materialized = {key: {str(k) for k in context.instance.get_materialized_partitions(key)} for key in (RAW, FEATURES)}
        return nightly_requests(partitions, date, pipeline.train_days, materialized)

    return nightly_schedule
