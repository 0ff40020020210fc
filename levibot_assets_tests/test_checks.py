"""Asset checks evaluated inside one partition's materialization, through dagster.materialize()."""
import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from levibot_assets_tests.graph import features, raw_ohlcv
from levibot_assets.checks import drift_check_result, model_check_results
from levibot_assets.core.features import compute_features
from levibot_assets.core.sources.synthetic import synthetic_day
from levibot_assets.definitions import build_resources
from levibot_assets.partitions import partition_key
from levibot_assets.resources.market_data import MarketDataResource
from levibot_assets.settings import Settings

DAY = dt.date(2023, 3, 24)


class CorruptMarketData(MarketDataResource):
    """Real synthetic candles with the faults a broken exchange dump has: a repeated bar and a
    bar whose low is above its close."""

    def fetch_day(self, symbol: str, date: dt.date) -> pd.DataFrame:
        bars = synthetic_day(symbol, date)
        bars.loc[100, "low"] = bars.loc[100, "close"] * 1.01
        return pd.concat([bars.iloc[:50], bars.iloc[[49]], bars.iloc[50:]], ignore_index=True)


def _downstream_assets():
    """raw_ohlcv + features, and lgbm_model once the models module exists."""
    assets = [raw_ohlcv, features]
    try:
        from levibot_assets_tests.graph import lgbm_model
    except ImportError:
        return assets
    return [*assets, lgbm_model]


def _resources(tmp_path, **overrides):
    return {**build_resources(Settings(data_dir=str(tmp_path / "data"))), **overrides}


def _evaluations(result):
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def test_broken_raw_partition_blocks_everything_downstream(tmp_path):
    assets = _downstream_assets()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets,
            partition_key=str(partition_key(DAY, "BTCUSDT")),
            resources=_resources(tmp_path, market_data=CorruptMarketData()),
            instance=instance,
            raise_on_error=False,
        )
        checks = _evaluations(result)
        consistent = checks[("raw_ohlcv", "consistent_bars")]
        assert not consistent.passed
        assert consistent.severity == dg.AssetCheckSeverity.ERROR
        assert consistent.metadata["duplicate_timestamps"].value == 1
        assert consistent.metadata["inconsistent_ohlc"].value == 1
        assert consistent.partition == f"{DAY}|BTCUSDT"
        assert not result.get_asset_materialization_events()  # kept off disk: nothing can train on it
        for asset in assets:
            assert not instance.get_materialized_partitions(asset.key)
        assert not result.success
    assert not (tmp_path / "data" / "raw_ohlcv").exists()


def test_real_halt_day_warns_with_gap_times(tmp_path, shared_data_dir):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_ohlcv, features],
            partition_key=str(partition_key(DAY, "BTCUSDT")),
            resources=_resources(tmp_path, market_data=MarketDataResource(source="files", files_dir=str(shared_data_dir))),
            instance=instance,
        )
    assert result.success
    checks = _evaluations(result)
    complete, halt = checks[("raw_ohlcv", "complete_day")], checks[("raw_ohlcv", "no_trading_halt")]
    assert checks[("raw_ohlcv", "consistent_bars")].passed
    assert not complete.passed and complete.severity == dg.AssetCheckSeverity.WARN
    assert "12:40..13:59" in complete.description
    assert complete.metadata["missing_minutes"].value == 80
    assert complete.metadata["gap_times"].value == ["2023-03-24 12:40..13:59 (80 min)"]
    assert not halt.passed and halt.severity == dg.AssetCheckSeverity.WARN and "11:28..12:39" in halt.description
    assert checks[("features", "finite_values")].passed
    assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == {"raw_ohlcv", "features"}


def test_model_and_drift_results():
    t0 = pd.Timestamp("2025-10-13", tz="UTC")
    overlap, beats = model_check_results(
        "auc", 0.52, {"majority": 0.5, "logistic": 0.53}, t0 - pd.Timedelta(minutes=5), t0, pd.Timedelta(minutes=65)
    )
    assert not overlap.passed and overlap.severity == dg.AssetCheckSeverity.ERROR
    assert not beats.passed and beats.severity == dg.AssetCheckSeverity.WARN
    assert beats.metadata["oos_score"].value == 0.52

    days = [dt.date(2025, 10, 10) + dt.timedelta(days=k) for k in range(4)]
    frames = {d.isoformat(): compute_features(synthetic_day("ETHUSDT", d), d, 15) for d in days}
    margin = Settings().psi_warn
    drift = drift_check_result(frames, days[-1], margin)
    assert drift.check_name == "feature_drift" and drift.severity == dg.AssetCheckSeverity.WARN
    assert drift.passed and "every feature within its bound" in drift.description
    assert drift.metadata["training_days"].value == 3 and drift.metadata["drifted"].value == []
    psi, bound = drift.metadata["psi_ret_1"].value, drift.metadata["bound_ret_1"].value
    assert np.isfinite(psi) and bound >= margin and psi == round(psi, 4) and bound == round(bound, 4)
    shifted = dict(frames)
    shifted[days[-1].isoformat()] = frames[days[-1].isoformat()].assign(log_volume=lambda f: f["log_volume"] + 5)
    drifted = drift_check_result(shifted, days[-1], margin)
    assert not drifted.passed and drifted.metadata["drifted"].value == ["log_volume"]
    assert drifted.metadata["psi_log_volume"].value > drifted.metadata["bound_log_volume"].value
    assert drifted.description.startswith("1 of 15 features above their bound: log_volume ")
    too_few = {d: frames[d] for d in sorted(frames)[-2:]}  # one training day: nothing to calibrate on
    for window in (too_few, {days[-1].isoformat(): frames[days[-1].isoformat()]}):
        missing = drift_check_result(window, days[-1], margin)
        assert not missing.passed and "cannot measure drift" in missing.description

@pytest.mark.slow
def test_model_asset_reports_overlap_baseline_and_drift_checks(levibot_env):
    from levibot_assets_tests.graph import lgbm_model

    settings = levibot_env(OPTUNA_TRIALS=2, THREADS=1)
    day = dt.date(2023, 4, 4)
    with dg.instance_for_test() as instance:
        for back in range(3, -1, -1):  # 3 training days, then the test day
            key = str(partition_key(day - dt.timedelta(days=back), "BTCUSDT"))
            assert dg.materialize([raw_ohlcv, features], partition_key=key, resources=build_resources(settings), instance=instance).success
        result = dg.materialize(
            [raw_ohlcv, features, lgbm_model], selection=[lgbm_model], partition_key=str(partition_key(day, "BTCUSDT")),
            resources=build_resources(settings), instance=instance,
        )
    checks = _evaluations(result)
    overlap = checks[("lgbm_model", "no_train_test_overlap")]
    assert overlap.passed and overlap.metadata["gap_minutes"].value >= overlap.metadata["required_gap_minutes"].value
    beats = checks[("lgbm_model", "beats_baselines")]
    assert beats.severity == dg.AssetCheckSeverity.WARN and np.isfinite(beats.metadata["oos_score"].value)
    drift = checks[("lgbm_model", "feature_drift")]
    assert drift.metadata["training_days"].value == 3 and np.isfinite(drift.metadata["max_psi"].value)
    assert drift.partition == f"{day}|BTCUSDT"
