"""Range runs: many (date, symbol) partitions in one run, each checked before it replaces what is on disk."""
import datetime as dt
import os

import dagster as dg
import numpy as np
import pandas as pd

from levibot_assets_tests.graph import features, raw_ohlcv
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.sources.synthetic import synthetic_day
from levibot_assets.core.tables import write_table
from levibot_assets.definitions import build_resources
from levibot_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, partition_key
from levibot_assets.resources.market_data import MarketDataResource
from levibot_assets_tests.stored_files import parquet_files

ASSETS = [raw_ohlcv, features]
DATES = [dt.date(2025, 10, 12), dt.date(2025, 10, 13), dt.date(2025, 10, 14)]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
BAD_DAY = dt.date(2025, 10, 13)


class NegativePricesOnOneDay(MarketDataResource):
    """Synthetic candles, except that on BAD_DAY the exchange sends NaN and negative prices."""

    def fetch_day(self, symbol: str, date: dt.date) -> pd.DataFrame:
        bars = synthetic_day(symbol, date)
        if date == BAD_DAY:
            bars.loc[10, "close"] = np.nan
            bars.loc[20, ["open", "low"]] = -1.0
        return bars


def _range(start: dt.date, end: dt.date, first: str, last: str) -> dict:
    return {RANGE_START_TAG: str(partition_key(start, first)), RANGE_END_TAG: str(partition_key(end, last))}


def _assert_recorded_in_date_order(instance, asset_key: dg.AssetKey, keys: list[str]) -> None:
    """One materialization per partition, stored in date order, so the asset's latest is the newest date."""
    records = instance.fetch_materializations(asset_key, limit=1000, ascending=True).records
    assert [r.partition_key for r in records] == keys
    assert instance.get_latest_materialization_event(asset_key).asset_materialization.partition == keys[-1]


def _assert_check_partitions_evaluated(instance, asset_key: dg.AssetKey, keys: set[str]) -> None:
    """What the checks' Partitions tab shows: each partition's last evaluation targets its latest
    materialization (else Dagster resolves the partition's check status to missing)."""
    check_keys = [dg.AssetCheckKey(asset_key, name) for name in ("finite_values", "complete_after_warmup", "label_balance")]
    infos = instance.event_log_storage.get_asset_check_partition_info(check_keys)
    assert {(i.check_key.name, i.partition_key) for i in infos} == {(k.name, p) for k in check_keys for p in keys}
    for info in infos:
        assert info.is_current, (info.check_key.name, info.partition_key)
        assert info.latest_execution_status.value in ("SUCCEEDED", "FAILED")


def test_a_range_is_one_run_with_per_partition_files_metadata_and_checks(levibot_env, tmp_path):
    settings = levibot_env()
    layout = DataLayout(settings.data_dir)
    with dg.instance_for_test() as instance:
        result = dg.materialize(ASSETS, resources=build_resources(settings), instance=instance,
                                tags=_range(DATES[0], DATES[-1], SYMBOLS[0], SYMBOLS[-1]))
        assert result.success
        assert len(instance.get_runs()) == 1
        materialized = {str(k) for k in instance.get_materialized_partitions(dg.AssetKey("features"))}
        for asset in ("raw_ohlcv", "features"):
            _assert_recorded_in_date_order(instance, dg.AssetKey(asset), [f"{d}|{s}" for d in DATES for s in SYMBOLS])
        _assert_check_partitions_evaluated(instance, dg.AssetKey("features"), materialized)
    expected = {f"{d}|{s}" for d in DATES for s in SYMBOLS}
    assert materialized == expected
    raw_events = {m.partition: m.materialization.metadata for m in result.get_asset_materialization_events()
                  if m.asset_key == dg.AssetKey("raw_ohlcv")}
    assert set(raw_events) == expected
    for key, metadata in raw_events.items():  # each partition's own metadata, not the range's
        date, symbol = key.split("|")
        frame = pd.read_parquet(layout.table("raw_ohlcv", date, symbol))
        assert metadata["last_close"].value == round(frame["close"].iloc[-1], 4)  # shown to 4 decimals
        assert metadata["path"].value == str(layout.table("raw_ohlcv", date, symbol))
    evaluations = result.get_asset_check_evaluations()
    assert {(e.check_name, e.partition) for e in evaluations if e.asset_key == dg.AssetKey("features")} == {
        (name, key) for name in ("finite_values", "complete_after_warmup", "label_balance") for key in expected
    }
    range_files = parquet_files(layout.root)

    # the same partitions one run each give byte-identical files (the warm-up day is read the same way)
    single = levibot_env(DATA_DIR=tmp_path / "single")
    with dg.instance_for_test() as instance:
        for date in DATES:
            for symbol in SYMBOLS:
                assert dg.materialize(ASSETS, resources=build_resources(single), instance=instance,
                                      partition_key=partition_key(date, symbol)).success
    single_layout = DataLayout(tmp_path / "single")
    assert parquet_files(single_layout.root) == range_files


def test_a_failing_blocking_check_keeps_the_previous_file_and_names_the_cause(levibot_env):
    settings = levibot_env()
    layout = DataLayout(settings.data_dir)
    tags = _range(DATES[0], DATES[-1], "BTCUSDT", "BTCUSDT")
    good = [f"{d}|BTCUSDT" for d in DATES if d != BAD_DAY]
    bad = f"{BAD_DAY}|BTCUSDT"
    with dg.instance_for_test() as instance:
        assert dg.materialize(ASSETS, resources=build_resources(settings), instance=instance, tags=tags).success
        before = parquet_files(layout.root)
        for path in layout.root.rglob("*.parquet"):  # so a rewrite of a good day shows (same bytes)
            os.utime(path, (0, 0))

        result = dg.materialize(ASSETS, instance=instance, tags=tags, raise_on_error=False,
                                resources={**build_resources(settings), "market_data": NegativePricesOnOneDay()})
        assert not result.success
        # raw_ohlcv names its bad day and lets features go on with the good ones; features fails the run
        steps = {e.step_key: e.event_type_value for e in result.all_events if e.is_step_success or e.is_step_failure}
        assert steps == {"raw_ohlcv": "STEP_SUCCESS", "features": "STEP_FAILURE"}
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.event_specific_data.error.message
        assert f"{bad}: not stored, upstream raw_ohlcv: check consistent_bars failed" in message
        assert "1 of 3 partition(s) failed" in message
        (evaluation,) = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert (evaluation.check_name, evaluation.partition, evaluation.severity) == (
            "consistent_bars", bad, dg.AssetCheckSeverity.ERROR)
        # the good days of the range were written and recorded by both assets; the bad day by neither
        for asset in ("raw_ohlcv", "features"):
            assert sorted(m.partition for m in result.get_asset_materialization_events()
                          if m.asset_key == dg.AssetKey(asset)) == good
            status = instance.get_status_by_partition(dg.AssetKey(asset), [*good, bad], raw_ohlcv.partitions_def)
            assert {k for k, v in status.items() if v.value == "FAILED"} == {bad}, (asset, status)
        rewritten = {p for p in layout.root.rglob("*.parquet") if p.stat().st_mtime > 0}
        assert rewritten == {layout.table(asset, d, "BTCUSDT") for asset in ("raw_ohlcv", "features")
                             for d in DATES if d != BAD_DAY}
    after = parquet_files(layout.root)
    assert after == before  # byte-identical: the bad day never replaced the good file


def test_a_bad_file_on_disk_does_not_replace_good_features(levibot_env):
    settings = levibot_env()
    layout = DataLayout(settings.data_dir)
    key = partition_key(BAD_DAY, "ETHUSDT")
    with dg.instance_for_test() as instance:
        assert dg.materialize(ASSETS, resources=build_resources(settings), instance=instance, partition_key=key).success
        good = layout.table("features", BAD_DAY, "ETHUSDT").read_bytes()
        raw_path = layout.table("raw_ohlcv", BAD_DAY, "ETHUSDT")
        raw = pd.read_parquet(raw_path)
        raw.loc[500:, ["open", "high", "low", "close"]] = 0.0  # a damaged dump: log returns become infinite
        write_table(layout, "raw_ohlcv", BAD_DAY, "ETHUSDT", raw)  # a valid file with bad values (not bit rot)
        result = dg.materialize(ASSETS, resources=build_resources(settings), instance=instance, partition_key=key,
                                selection=[features], raise_on_error=False)
    assert not result.success
    (finite,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "finite_values"]
    assert not finite.passed and finite.partition == str(key)
    assert layout.table("features", BAD_DAY, "ETHUSDT").read_bytes() == good


def test_models_refuse_features_made_under_another_label_horizon(levibot_env):
    from levibot_assets_tests.graph import lgbm_model
    from levibot_assets.core.features import CONTRACT_ATTR, FEATURE_SET_VERSION

    settings = levibot_env()  # LEVIBOT_LABEL_HORIZON 15
    layout = DataLayout(settings.data_dir)
    tags = _range(DATES[0], DATES[-1], "BTCUSDT", "BTCUSDT")
    with dg.instance_for_test() as instance:
        assert dg.materialize(ASSETS, resources=build_resources(settings), instance=instance, tags=tags).success
        stored = pd.read_parquet(layout.table("features", DATES[-1], "BTCUSDT"))
        assert stored.attrs[CONTRACT_ATTR] == {"feature_set": FEATURE_SET_VERSION, "label_horizon": 15}
        changed = levibot_env(LABEL_HORIZON=30, OPTUNA_TRIALS=1)
        result = dg.materialize([lgbm_model], resources=build_resources(changed), instance=instance,
                                partition_key=partition_key(DATES[-1], "BTCUSDT"), raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error.message
    assert "FeatureContractError" in message and "'label_horizon': 15" in message and "'label_horizon': 30" in message
    assert str(layout.table("features", DATES[0], "BTCUSDT")) in message
    assert not layout.model_dir(DATES[-1], "BTCUSDT").exists()


def test_metadata_floats_are_rounded_for_reading():
    from levibot_assets.assets.partition_runs import rounded_metadata

    out = rounded_metadata({"auc": 0.5123456789, "p": dg.MetadataValue.float(1 / 3), "tiny": 1.23456e-7,
                            "n": 7, "psi": dg.MetadataValue.json({"ret_1": [0.123456, 2]}), "text": "0.123456"})
    assert (out["auc"], out["p"].value, out["tiny"], out["n"]) == (0.5123, 0.3333, 1.235e-7, 7)
    assert out["psi"].data == {"ret_1": [0.1235, 2]} and out["text"] == "0.123456"
