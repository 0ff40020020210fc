"""Materialize (date, symbol) partitions in-process into the persistent Dagster instance.

Used by `levibot materialize` and `make run`: runs are recorded in DAGSTER_HOME, so they show in
the UI afterwards. Dates run in ascending order, so a model's training window is already built
when its day comes up.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import dagster as dg

from levibot_assets.partitions import partition_key


# The console shows warnings and errors only; the full event log is in the instance (UI).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class PartitionRun:
    date: dt.date
    symbol: str
    success: bool
    run_id: str


def last_complete_day(now: dt.datetime | None = None) -> dt.date:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"end date {end} is before start date {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def materialize_partitions(
    defs: dg.Definitions,
    dates: Iterable[dt.date],
    symbols: Sequence[str],
    selection: Sequence[str],
    instance: dg.DagsterInstance,
    on_run: Callable[[PartitionRun], None] = lambda run: None,
) -> list[PartitionRun]:
    """One run per (date, symbol) of the selected assets (and their checks); stops at nothing."""
    job = defs.resolve_implicit_global_asset_job_def()
    keys = [dg.AssetKey(name) for name in selection]
    runs = []
    for date in sorted(dates):
        for symbol in symbols:
            result = job.execute_in_process(
                instance=instance,
                partition_key=partition_key(date, symbol),
                asset_selection=keys,
                raise_on_error=False,
                run_config=QUIET_CONSOLE,
                tags={"levibot/trigger": "cli", "levibot/symbol": symbol},
            )
            run = PartitionRun(date, symbol, result.success, result.run_id)
            on_run(run)
            runs.append(run)
    return runs
