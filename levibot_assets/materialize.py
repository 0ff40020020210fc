"""Range runs into the persistent Dagster instance: what `levibot materialize` and `make run` use.

A range of dates for one symbol is ONE run carrying Dagster's partition-range tags, exactly what
`dagster asset materialize --partition-range` and a UI backfill launch (every asset has
`BackfillPolicy.single_run()`); the assets take its partitions in date order. Runs are recorded
in DAGSTER_HOME, so they show in the UI afterwards.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Sequence

import dagster as dg

from levibot_assets.partitions import SYMBOL_TAG, range_tags
from levibot_assets.settings import SettingsError

# The console shows what the assets report (progress of partitions, Optuna trials, TFT epochs),
# warnings and errors; Dagster's own step events stay in the instance (UI), where they are DEBUG.
PROGRESS_CONSOLE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass(frozen=True)
class RangeRun:
    symbol: str
    start: dt.date
    end: dt.date
    success: bool
    run_id: str
    failure: str = ""


def last_complete_day(now: dt.datetime | None = None) -> dt.date:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)


def check_range(start: dt.date, end: dt.date, first_date: dt.date, last_date: dt.date) -> None:
    """One clear line for a range that has no partitions to run."""
    if end < start:
        raise SettingsError(f"end date {end} is before start date {start}")
    if start < first_date:
        raise SettingsError(f"start date {start} is before the first partition {first_date} (LEVIBOT_START_DATE)")
    if end > last_date:
        raise SettingsError(f"end date {end} is after the last complete UTC day {last_date}")


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    """What failed, as the code that failed said it: Dagster wraps an asset's own error (an OSError of a
    read-only data directory, say) in "Error occurred while executing op ...", which names no cause."""
    errors = [e.event_specific_data.error for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return "\n".join(_innermost(error).message.strip() for error in errors if error is not None)


def _innermost(error):
    while error.cause is not None:
        error = error.cause
    return error


def materialize_ranges(
    defs: dg.Definitions,
    start: dt.date,
    end: dt.date,
    symbols: Sequence[str],
    selection: Sequence[str],
    instance: dg.DagsterInstance,
    on_run: Callable[[RangeRun], None] = lambda run: None,
) -> list[RangeRun]:
    """One run per symbol over start..end of the selected assets (and their checks)."""
    job = defs.resolve_implicit_global_asset_job_def()
    keys = [dg.AssetKey(name) for name in selection]
    runs = []
    for symbol in symbols:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=keys,
            raise_on_error=False,
            run_config=PROGRESS_CONSOLE,
            tags={**range_tags(start, end, symbol), "levibot/trigger": "cli", SYMBOL_TAG: symbol},
        )
        run = RangeRun(symbol, start, end, result.success, result.run_id, "" if result.success else _failure_message(result))
        on_run(run)
        runs.append(run)
    return runs
