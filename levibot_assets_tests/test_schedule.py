"""The 03:00 UTC schedule: yesterday, one run per symbol, after the missing training-window days."""
import datetime as dt

import dagster as dg

from levibot_assets.definitions import build_resources
from levibot_assets_tests.graph import ASSETS, DEFS as defs, SETTINGS, nightly_schedule
from levibot_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, SYMBOL_TAG, partition_key
from levibot_assets.schedules import window_days
from levibot_assets.settings import get_settings

TICK = dt.datetime(2025, 10, 14, 3, 0, tzinfo=dt.timezone.utc)
SYMBOLS = get_settings().symbols
TRAIN_DAYS = get_settings().train_days
PIPELINE = {"pipeline": build_resources(SETTINGS)["pipeline"]}  # the schedule reads train_days from it


def _report_materialized(instance, asset: str, dates, symbols=SYMBOLS):
    for date in dates:
        for symbol in symbols:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=asset, partition=str(partition_key(date, symbol)))
            )


def _evaluate(instance):
    return nightly_schedule.evaluate_tick(
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=TICK, repository_def=defs.get_repository_def(), resources=PIPELINE
        )
    )


def test_schedule_is_daily_at_three_utc_and_on_by_default():
    assert [s.name for s in defs.schedules] == ["nightly_schedule"]
    schedule = nightly_schedule
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "nightly"


def test_complete_window_gives_exactly_one_run_per_symbol_for_yesterday():
    with dg.instance_for_test() as instance:
        days = window_days(dt.date(2025, 10, 13), TRAIN_DAYS, dt.date(2023, 3, 1))
        assert len(days) == TRAIN_DAYS - 1 and days[-1] == dt.date(2025, 10, 12)
        _report_materialized(instance, "raw_ohlcv", days)
        _report_materialized(instance, "features", days)
        requests = _evaluate(instance).run_requests
    assert sorted(r.partition_key for r in requests) == sorted(f"2025-10-13|{s}" for s in SYMBOLS)
    assert all(r.asset_selection is None and r.tags[SYMBOL_TAG] in SYMBOLS for r in requests)


def test_fresh_install_fills_the_window_first_in_one_range_run():
    first_day = dt.date(2025, 10, 13) - dt.timedelta(days=TRAIN_DAYS - 1)
    with dg.instance_for_test() as instance:
        _report_materialized(instance, "raw_ohlcv", [first_day], ["BTCUSDT"])  # raw there, features not
        window = window_days(dt.date(2025, 10, 13), TRAIN_DAYS, first_day)
        _report_materialized(instance, "features", window, ["ETHUSDT"])
        _report_materialized(instance, "raw_ohlcv", window, ["SOLUSDT"])
        _report_materialized(instance, "features", [dt.date(2025, 10, 12)], ["SOLUSDT"])
        requests = _evaluate(instance).run_requests
    btc = [r for r in requests if r.tags[SYMBOL_TAG] == "BTCUSDT"]
    assert len(btc) == 2
    fill, nightly = btc
    assert fill.partition_key is None
    assert fill.tags[RANGE_START_TAG] == f"{first_day}|BTCUSDT" and fill.tags[RANGE_END_TAG] == "2025-10-12|BTCUSDT"
    assert fill.asset_selection == [dg.AssetKey("raw_ohlcv"), dg.AssetKey("features")]  # raw missing on most days
    assert nightly.partition_key == "2025-10-13|BTCUSDT" and nightly.asset_selection is None  # the whole graph
    assert [r.partition_key for r in requests if r.tags[SYMBOL_TAG] == "ETHUSDT"] == ["2025-10-13|ETHUSDT"]
    sol_fill, _ = [r for r in requests if r.tags[SYMBOL_TAG] == "SOLUSDT"]
    assert sol_fill.asset_selection == [dg.AssetKey("features")]  # raw already there: not fetched again
    assert (sol_fill.tags[RANGE_START_TAG], sol_fill.tags[RANGE_END_TAG]) == (f"{first_day}|SOLUSDT", "2025-10-11|SOLUSDT")


def test_window_is_clipped_at_the_start_date():
    assert window_days(dt.date(2023, 3, 3), 14, dt.date(2023, 3, 1)) == [dt.date(2023, 3, 1), dt.date(2023, 3, 2)]


def test_no_run_before_the_first_partition():
    with dg.instance_for_test() as instance:
        result = nightly_schedule.evaluate_tick(
            dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=dt.datetime(2023, 3, 1, 3, tzinfo=dt.timezone.utc),
                repository_def=defs.get_repository_def(),
                resources=PIPELINE,
            )
        )
    assert not result.run_requests and "not a date partition" in result.skip_message


def test_the_fill_request_runs_as_one_range_run_over_the_missing_days(levibot_env):
    from levibot_assets.core.layout import DataLayout

    settings = levibot_env()
    with dg.instance_for_test() as instance:
        requests = _evaluate(instance).run_requests  # empty instance: every window day is missing
        fill = next(r for r in requests if r.tags[SYMBOL_TAG] == "ETHUSDT" and r.partition_key is None)
        job = dg.Definitions(assets=ASSETS, resources=build_resources(settings)).resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, tags=fill.tags, asset_selection=fill.asset_selection)
        assert result.success
        window = window_days(dt.date(2025, 10, 13), TRAIN_DAYS, dt.date(2023, 3, 1))
        assert {str(k) for k in instance.get_materialized_partitions(dg.AssetKey("features"))} == {
            f"{d}|ETHUSDT" for d in window}
    assert all(DataLayout(settings.data_dir).table("features", d, "ETHUSDT").exists() for d in window)
